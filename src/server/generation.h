// Generation: one API call's choices (prompts x n) running on the engine, with their
// accumulated tokens, text, logprobs and timings, for both the streaming and the whole response.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/engine_client.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace tidal {

struct Choice {
  size_t index = 0;
  std::string request_id;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::vector<TokenLogprob> prompt_logprobs;  // prompt tokens 1..n-1, with prompt_logprobs
  FinishReason finish_reason = FinishReason::kNone;
  std::optional<std::chrono::steady_clock::time_point> last_output_at;
};

class Generation {
 public:
  using Clock = std::chrono::steady_clock;

  // Checks every prompt against the context length, fills in max_tokens where the request left
  // it to the server (chat: the rest of the context), and submits every choice. On failure
  // nothing stays queued.
  static std::variant<std::unique_ptr<Generation>, ApiError> start(
      EngineClient& engine, ServerMetrics& metrics, const GenerationRequest& request,
      const std::vector<std::vector<int32_t>>& prompts, const std::string& id);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // The next output of any choice, applied to that choice; nullopt when none has arrived (it
  // never waits: set_listener says when one does).
  struct Update {
    size_t choice;
    RequestOutput output;
  };
  std::optional<Update> next();
  bool finished() const { return num_finished_ == choices_.size(); }
  // Why the server ended a choice it could not complete (its engine's kAbort with an error);
  // empty when every choice ended normally or the client went away.
  const std::string& server_error() const { return server_error_; }
  // Aborts every unfinished choice (the client went away).
  void abort();
  // Called on the engine's thread whenever an output arrives for next() (nullptr: no more).
  void set_listener(std::function<void()> listener) { queue_->set_listener(std::move(listener)); }

  const std::vector<Choice>& choices() const { return choices_; }
  const std::string& id() const { return id_; }
  int64_t created() const { return created_; }
  int64_t num_prompt_tokens() const { return num_prompt_tokens_; }
  int64_t num_completion_tokens() const;

 private:
  Generation(EngineClient& engine, ServerMetrics& metrics, std::string id);

  EngineClient* engine_;
  ServerMetrics* metrics_;
  std::string id_;
  int64_t created_;
  Clock::time_point started_at_;
  std::shared_ptr<OutputQueue> queue_;
  std::vector<Choice> choices_;
  size_t num_finished_ = 0;
  std::string server_error_;
  int64_t num_prompt_tokens_ = 0;
};

}  // namespace tidal
