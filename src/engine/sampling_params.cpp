// Validation of SamplingParams against OpenAI/vLLM ranges.
#include "engine/sampling_params.h"

#include <cmath>

namespace tidal {

Status SamplingParams::validate(int32_t vocab_size) const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return Status::invalid_argument(cat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < -1)
    return Status::invalid_argument(cat("top_k must be -1, 0 or positive, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return Status::invalid_argument(cat("top_p must be in (0, 1], got ", top_p));
  }
  if (max_tokens < 1)
    return Status::invalid_argument(cat("max_tokens must be >= 1, got ", max_tokens));
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return Status::invalid_argument(
        cat("min_tokens must be in [0, max_tokens=", max_tokens, "], got ", min_tokens));
  }
  if (logprobs && (*logprobs < 0 || *logprobs > 20)) {
    return Status::invalid_argument(cat("logprobs must be in [0, 20], got ", *logprobs));
  }
  if (prompt_logprobs && (*prompt_logprobs < 0 || *prompt_logprobs > 20)) {
    return Status::invalid_argument(
        cat("prompt_logprobs must be in [0, 20], got ", *prompt_logprobs));
  }
  for (const std::string& text : stop) {
    if (text.empty()) return Status::invalid_argument("stop strings must not be empty");
  }
  if (stop_token_ids.size() > kMaxStopTokenIds) {
    return Status::invalid_argument(cat("stop_token_ids holds ", stop_token_ids.size(),
                                        " ids; at most ", kMaxStopTokenIds, " are allowed"));
  }
  for (const int32_t id : stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return Status::invalid_argument(cat("stop_token_ids: ", id, " is outside the vocabulary"));
    }
  }
  if (!(std::abs(presence_penalty) <= 2.0f))
    return Status::invalid_argument(
        cat("presence_penalty must be in [-2, 2], got ", presence_penalty));
  if (!(std::abs(frequency_penalty) <= 2.0f))
    return Status::invalid_argument(
        cat("frequency_penalty must be in [-2, 2], got ", frequency_penalty));
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty)))
    return Status::invalid_argument(
        cat("repetition_penalty must be > 0, got ", repetition_penalty));
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    return Status::invalid_argument(cat("min_p must be in [0, 1], got ", min_p));
  for (size_t i = 0; i < logit_bias.size(); ++i) {
    const auto [id, bias] = logit_bias[i];
    if (id < 0 || id >= vocab_size)
      return Status::invalid_argument(cat("logit_bias: ", id, " is outside the vocabulary"));
    if (!std::isfinite(bias))
      return Status::invalid_argument(cat("logit_bias: the bias of ", id, " is not finite"));
    if (i > 0 && logit_bias[i - 1].first >= id)
      return Status::invalid_argument("logit_bias: ids must be sorted and given once");
  }
  for (const int32_t id : allowed_token_ids) {
    if (id < 0 || id >= vocab_size)
      return Status::invalid_argument(cat("allowed_token_ids: ", id, " is outside the vocabulary"));
  }
  // A grammar decides which tokens may come and where the output ends: what would narrow it
  // further could leave nothing to draw.
  if (structured_output.active()) {
    const std::string& by = structured_output.field;
    if (!allowed_token_ids.empty()) {
      return Status::invalid_argument(cat("allowed_token_ids cannot be combined with '", by,
                                          "' (its grammar says which tokens may come)"));
    }
    if (!bad_words_ids.empty()) {
      return Status::invalid_argument(cat("bad_words cannot be combined with '", by,
                                          "' (its grammar says which tokens may come)"));
    }
    if (min_tokens > 0) {
      return Status::invalid_argument(cat("min_tokens cannot be combined with '", by,
                                          "' (its grammar says where the output ends)"));
    }
  }
  for (const std::vector<int32_t>& word : bad_words_ids) {
    if (word.empty()) return Status::invalid_argument("bad_words: a word has no tokens");
    for (const int32_t id : word) {
      if (id < 0 || id >= vocab_size)
        return Status::invalid_argument(cat("bad_words: ", id, " is outside the vocabulary"));
    }
  }
  return Status::ok();
}

bool SamplingParams::adjusts_logits() const {
  return presence_penalty != 0.0f || frequency_penalty != 0.0f || repetition_penalty != 1.0f ||
         !logit_bias.empty();
}

const char* SamplingParams::adjusted_sampling_field() const {
  if (presence_penalty != 0.0f) return "presence_penalty";
  if (frequency_penalty != 0.0f) return "frequency_penalty";
  if (repetition_penalty != 1.0f) return "repetition_penalty";
  if (!logit_bias.empty()) return "logit_bias";
  if (min_p > 0.0f) return "min_p";
  if (!allowed_token_ids.empty()) return "allowed_token_ids";
  if (!bad_words_ids.empty()) return "bad_words";
  if (prompt_logprobs) return "prompt_logprobs";
  if (structured_output.active()) return structured_output.field.c_str();
  return nullptr;
}

}  // namespace tidal
