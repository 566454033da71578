// Generation: submitting choices and folding their outputs.
#include "server/generation.h"

#include <ctime>

namespace tidal {
namespace {

// The request field an engine verdict is about, for the error's param: sampling checks name
// the field first ("top_p must be ...", "stop_token_ids: ..."), prompt checks mention it.
std::string param_of(const std::string& message) {
  static const char* kFields[] = {
      "temperature",        "top_k", "top_p",          "max_tokens",        "min_tokens",
      "logprobs",           "stop",  "stop_token_ids", "presence_penalty",  "frequency_penalty",
      "repetition_penalty", "min_p", "logit_bias",     "allowed_token_ids", "bad_words"};
  const std::string first = message.substr(0, message.find_first_of(" :"));
  for (const char* field : kFields) {
    if (first == field) return first;
  }
  return message.find("prompt") != std::string::npos ? "prompt" : "";
}

}  // namespace

Generation::Generation(EngineClient& engine, ServerMetrics& metrics, std::string id)
    : engine_(&engine),
      metrics_(&metrics),
      id_(std::move(id)),
      created_(static_cast<int64_t>(std::time(nullptr))),
      started_at_(Clock::now()),
      queue_(std::make_shared<OutputQueue>()) {}

Generation::~Generation() {
  queue_->set_listener(nullptr);
  abort();
}

std::variant<std::unique_ptr<Generation>, ApiError> Generation::start(
    EngineClient& engine, ServerMetrics& metrics, const GenerationRequest& request,
    const std::vector<std::vector<int32_t>>& prompts, const std::string& id) {
  const int64_t max_len = engine.max_model_len();
  const int64_t wanted = request.max_tokens_given ? request.params.max_tokens : 0;
  if (wanted > max_len) {
    return ApiError::bad_request(
        cat("'", request.max_tokens_field, "' is ", wanted,
            ", more than this model's maximum context length of ", max_len, " tokens"),
        request.max_tokens_field);
  }
  for (const std::vector<int32_t>& prompt : prompts) {
    const auto prompt_len = static_cast<int64_t>(prompt.size());
    if (prompt_len == 0) return ApiError::bad_request("the prompt is empty", "prompt");
    // wanted is at most max_len here, so the sum cannot overflow.
    if (prompt_len >= max_len || prompt_len + wanted > max_len) {
      return ApiError::bad_request(
          cat("This model's maximum context length is ", max_len,
              " tokens. However, you requested ", prompt_len + wanted, " tokens (", prompt_len,
              " in the prompt, ", wanted,
              " in the completion). Please reduce the prompt or max_tokens."),
          "prompt");
    }
  }
  std::unique_ptr<Generation> generation(new Generation(engine, metrics, id));
  for (size_t p = 0; p < prompts.size(); ++p) {
    // Usage counts each prompt once, however many choices share it (as OpenAI does).
    generation->num_prompt_tokens_ += static_cast<int64_t>(prompts[p].size());
    for (int32_t i = 0; i < request.n; ++i) {
      Choice choice;
      choice.index = generation->choices_.size();
      choice.request_id = cat(id, "-", choice.index);
      choice.prompt_ids = prompts[p];
      SamplingParams params = request.params;
      if (!request.max_tokens_given) {
        // Completions default to 16 tokens (OpenAI); chat to the rest of the context (the parser
        // leaves it at int64 max).
        params.max_tokens = std::min<int64_t>(
            params.max_tokens, max_len - static_cast<int64_t>(choice.prompt_ids.size()));
      }
      if (params.seed) *params.seed += static_cast<uint64_t>(i);  // n seeded choices differ
      const Status status = engine.submit(choice.request_id, choice.prompt_ids, std::move(params),
                                          generation->queue_);
      if (!status.is_ok()) {
        generation->abort();
        if (status.code() == StatusCode::kUnavailable) {
          // Not the client's fault: a rank is gone or the engine is shutting down.
          return ApiError{.status = 503,
                          .type = "service_unavailable",
                          .message = status.message(),
                          .param = "",
                          .code = "engine_unavailable"};
        }
        return ApiError::bad_request(status.message(), param_of(status.message()));
      }
      generation->choices_.push_back(std::move(choice));
    }
  }
  metrics.add_prompt_tokens(generation->num_prompt_tokens());
  return generation;
}

std::optional<Generation::Update> Generation::next() {
  std::optional<RequestOutput> output = queue_->try_pop();
  if (!output) return std::nullopt;
  // Request ids end in "-<choice index>".
  const size_t index = std::stoul(output->request_id.substr(output->request_id.rfind('-') + 1));
  Choice& choice = choices_.at(index);
  const Clock::time_point now = Clock::now();
  if (!output->new_token_ids.empty()) {
    if (choice.last_output_at) {
      metrics_->observe_inter_token_latency(
          std::chrono::duration<double>(now - *choice.last_output_at).count());
    } else {
      metrics_->observe_time_to_first_token(
          std::chrono::duration<double>(now - started_at_).count());
    }
    choice.last_output_at = now;
    metrics_->add_generation_tokens(static_cast<int64_t>(output->new_token_ids.size()));
  }
  choice.token_ids.insert(choice.token_ids.end(), output->new_token_ids.begin(),
                          output->new_token_ids.end());
  choice.text += output->new_text;
  choice.logprobs.insert(choice.logprobs.end(), output->new_logprobs.begin(),
                         output->new_logprobs.end());
  // Sent once; a request handed to another rank may score its prompt again: the first holds.
  if (choice.prompt_logprobs.empty()) choice.prompt_logprobs = output->prompt_logprobs;
  if (output->finished() && choice.finish_reason == FinishReason::kNone) {
    choice.finish_reason = output->finish_reason;
    if (output->finish_reason == FinishReason::kAbort && server_error_.empty()) {
      server_error_ =
          output->error.empty() ? "the server could not complete the request" : output->error;
    }
    ++num_finished_;
    metrics_->count_finish(finish_reason_name(output->finish_reason));
    if (finished()) {
      metrics_->observe_request_latency(std::chrono::duration<double>(now - started_at_).count());
    }
  }
  return Update{index, std::move(*output)};
}

void Generation::abort() {
  for (Choice& choice : choices_) {
    if (choice.finish_reason != FinishReason::kNone) continue;
    engine_->abort(choice.request_id);
    // Nobody reads this generation's queue after an abort, so next() never folds in the
    // engine's final kAbort output: count the choice as aborted here, once.
    choice.finish_reason = FinishReason::kAbort;
    ++num_finished_;
    metrics_->count_finish(finish_reason_name(FinishReason::kAbort));
  }
}

int64_t Generation::num_completion_tokens() const {
  int64_t total = 0;
  for (const Choice& choice : choices_) total += static_cast<int64_t>(choice.token_ids.size());
  return total;
}

}  // namespace tidal
