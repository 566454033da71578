// Token sampling from one row of logits: greedy, temperature, top-k, top-p, seeded per request;
// and the logprobs of the model's own distribution.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "engine/request.h"
#include "engine/sampling_params.h"

namespace tidal {

// Greedy takes the lowest id among equal maxima. Others: temperature, then top-k, then top-p
// (the smallest set of most likely tokens whose probability reaches top_p), then a draw.
// Entries of `banned` (e.g. EOS before min_tokens) are never chosen.
int32_t sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::mt19937_64& rng, std::span<const int32_t> banned);

// log_softmax of the raw logits (before temperature) for `token` and the `top_n` most likely.
TokenLogprob compute_logprobs(std::span<const float> logits, int32_t token, int32_t top_n);

}  // namespace tidal
