// EngineLoop: runs an Engine on its own thread (the EngineClient of a single rank). Other threads
// submit requests, abort them, and read their outputs from queues; everything touching the Engine
// happens between its steps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_client.h"

namespace tidal {

class EngineLoop final : public EngineClient {
 public:
  explicit EngineLoop(Engine& engine);
  ~EngineLoop();
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Queues a request whose outputs go to `queue`. The Status is the engine's verdict
  // (invalid_argument with a reason), known once the loop has taken the request.
  Status submit(const std::string& id, std::vector<int32_t> prompt_ids, SamplingParams params,
                std::shared_ptr<OutputQueue> queue) override;
  // Aborts a request if it is still running; its queue receives a final kAbort output.
  void abort(const std::string& id) override;

  std::vector<EngineLoad> loads() const override;
  int64_t max_model_len() const override { return max_model_len_; }

 private:
  struct Submission {
    std::string id;
    std::vector<int32_t> prompt_ids;
    SamplingParams params;
    std::shared_ptr<OutputQueue> queue;
  };
  void run();
  void take_commands();
  // A submission the engine could not take ends with kAbort and the reason.
  static void fail_submission(Submission& submission, const std::string& why);
  void deliver(std::vector<RequestOutput> outputs);
  // The engine's numbers into load_ (under mutex_ once the thread runs), all but num_steps.
  void refresh_load();

  Engine* engine_;
  int64_t max_model_len_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Submission> submissions_;
  std::vector<std::string> aborts_;
  bool stopping_ = false;
  EngineLoad load_;
  std::unordered_map<std::string, std::shared_ptr<OutputQueue>> queues_;  // loop thread only
  std::thread thread_;
};

}  // namespace tidal
