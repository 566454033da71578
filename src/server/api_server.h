// ApiServer: the OpenAI-compatible HTTP API (completions, chat, models, health, metrics) over an
// EngineClient. No exception crosses it: every failure becomes an OpenAI-style error body.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine_client.h"
#include "model/tokenizer/tokenizer.h"
#include "server/chat_template.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace httplib {
class Server;
}

namespace tidal {

struct ServingContext {
  std::string model_name;       // what clients put in "model"
  std::string model_directory;  // reported as the model's root
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // nullptr: the model has none, chat is refused
  EngineClient* engine = nullptr;
  SamplingDefaults defaults;
  int64_t kv_block_size = 0;  // tokens per KV block on every rank (0: no capacity in /metrics)
};

struct ApiServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  size_t max_request_bytes = size_t{8} << 20;
  int http_threads = 256;  // each streaming client holds one for its whole stream
};

class ApiServer {
 public:
  ApiServer(ServingContext context, ApiServerOptions options);
  ~ApiServer();

  // Binds, then serves until stop(); throws tidal::Error naming the address if binding fails.
  // `on_listening` runs once the socket is bound, with the port (useful when port 0 was asked).
  void serve(const std::function<void(int port)>& on_listening = {});
  void stop();

  ServerMetrics& metrics() { return metrics_; }

 private:
  void register_routes();

  ServingContext context_;
  ApiServerOptions options_;
  ServerMetrics metrics_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<uint64_t> next_request_id_{0};
};

}  // namespace tidal
