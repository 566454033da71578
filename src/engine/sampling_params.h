// Per-request sampling and stopping parameters, with their validation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tidal {

// Temperatures below this draw greedily (a smaller one would scale logits past float range,
// where every kept id ties at infinity).
constexpr float kGreedyBelowTemperature = 1e-5f;
// stop_token_ids a request may give: their ids are banned before min_tokens, in a buffer sized once
// at warm-up.
constexpr size_t kMaxStopTokenIds = 64;

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0 or -1: off
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  int64_t max_tokens = 16;
  int64_t min_tokens = 0;
  std::vector<std::string> stop;        // stop strings, excluded from the text
  std::vector<int32_t> stop_token_ids;  // in addition to the model's EOS ids
  bool ignore_eos = false;
  std::optional<int32_t> logprobs;  // number of top alternatives per generated token
  bool skip_special_tokens = true;

  bool greedy() const { return temperature < kGreedyBelowTemperature; }
  // Returns an invalid_argument Status naming the first bad field.
  Status validate(int32_t vocab_size) const;
};

}  // namespace tidal
