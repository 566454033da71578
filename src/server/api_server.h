// ApiServer: the OpenAI-compatible HTTP API (completions, chat, models, health, metrics, admin)
// over an EngineClient, on the event-driven HttpServer. No exception crosses it: every failure
// becomes an OpenAI-style error body.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "engine/engine_client.h"
#include "model/tokenizer/tokenizer.h"
#include "server/access_policy.h"
#include "server/chat_template.h"
#include "server/http/http_server.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "server/reasoning_parser.h"

namespace tidal {

struct ServingContext {
  std::string model_name;       // what clients put in "model"
  std::string model_directory;  // reported as the model's root
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // nullptr: the model has none, chat is refused
  EngineClient* engine = nullptr;
  SamplingDefaults defaults;
  int64_t kv_block_size = 0;  // tokens per KV block on every rank (0: no capacity in /metrics)
  int64_t max_num_seqs = 0;   // sequences each rank runs at once (0: no queue limit)
  // --reasoning-parser: chat answers' thinking goes to reasoning_content (nullopt: off).
  std::optional<ReasoningSyntax> reasoning;
  // --tool-call-parser hermes: tool_choice "auto" parses <tool_call> blocks into tool_calls.
  bool parse_tool_calls = false;
  // --trust-request-chat-template: a request's chat_template is rendered (else refused).
  bool trust_request_chat_template = false;
  // Whether the ranks' sampler takes penalties, logit_bias, min_p, allowed_token_ids and
  // bad_words (the CPU backend's; the GPU's does not yet, and such requests get 400 there).
  bool adjusted_sampling = false;
};

struct ApiServerOptions {
  HttpServerOptions http;
  AccessOptions access;
  RequestLimits request_limits;
  // Choices waiting beyond what the ranks run at once; past it a request gets 503 with
  // Retry-After instead of an unbounded wait.
  int64_t max_queued_requests = 4096;
};

class ApiServer {
 public:
  ApiServer(ServingContext context, ApiServerOptions options);
  ~ApiServer();

  // Binds (throws tidal::Error naming the address when it cannot), runs `on_listening` with the
  // port, then serves until stop().
  void serve(const std::function<void(int port)>& on_listening = {});
  void stop();

  ServerMetrics& metrics() { return metrics_; }

 private:
  std::vector<HttpRoute> routes();
  HttpHooks hooks();
  void generate(HttpRequest request, const std::shared_ptr<HttpExchange>& exchange, bool chat);
  HttpResponse tokenize(const std::string& body) const;
  HttpResponse detokenize(const std::string& body) const;
  // The prompt the chat template makes of `inputs` (the request's own template when it has one),
  // or the 400 that says why there is none.
  std::variant<std::string, ApiError> render_chat(const ChatInputs& inputs) const;
  nlohmann::json model_card() const;
  // The tokenizer's encode, or the 400 that names add_special_tokens when its post-processor
  // cannot be applied.
  std::variant<std::vector<int32_t>, ApiError> encode(const std::string& text,
                                                      bool add_special_tokens) const;
  static ApiError model_not_found(const std::string& model);
  // vLLM's bad_words as token sequences (each word with and without a leading space).
  std::vector<std::vector<int32_t>> bad_words_ids(const std::vector<std::string>& words) const;

  ServingContext context_;
  ApiServerOptions options_;
  ServerMetrics metrics_;
  std::atomic<uint64_t> next_request_id_{0};
  std::atomic<int64_t> choices_in_flight_{0};
  std::unique_ptr<HttpServer> http_;
};

}  // namespace tidal
