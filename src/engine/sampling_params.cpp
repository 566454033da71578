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
  return Status::ok();
}

}  // namespace tidal
