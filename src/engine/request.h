// A request inside the engine: its tokens, progress, KV blocks, sampling seed and output text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/request_output.h"
#include "engine/sampling_params.h"
#include "engine/structured_output.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {

struct Request {
  std::string id;
  std::vector<int32_t> prompt_ids;
  SamplingParams params;

  std::vector<int32_t> output_ids;
  std::vector<TokenLogprob> logprobs;
  // With params.prompt_logprobs: entry i is prompt token i + 1's, filled as prefill computes it
  // (a recompute overwrites), sent once with the first output.
  std::vector<TokenLogprob> prompt_logprobs;
  bool prompt_logprobs_sent = false;
  int64_t num_computed_tokens = 0;  // tokens whose keys/values are in the KV cache
  std::vector<int32_t> block_ids;
  int64_t num_preemptions = 0;
  int64_t enqueued_step = 0;  // the scheduler's step count when it last joined the waiting queue
  FinishReason finish_reason = FinishReason::kNone;
  // The sampler's draws depend on (seed, output index) only: no state moves with the request.
  uint64_t seed = 0;

  // Detokenized output: text_ is everything decoded so far (stop strings cut), of which
  // text_sent_ bytes were already handed to the caller.
  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  // With params.structured_output: where the output is in its grammar (which ids may come next).
  std::unique_ptr<GrammarState> grammar;
  std::string text;
  size_t text_sent = 0;

  int64_t num_tokens() const { return static_cast<int64_t>(prompt_ids.size() + output_ids.size()); }
  int32_t token_at(int64_t index) const {
    const auto prompt = static_cast<int64_t>(prompt_ids.size());
    return index < prompt ? prompt_ids[index] : output_ids[index - prompt];
  }
  bool finished() const { return finish_reason != FinishReason::kNone; }
};

}  // namespace tidal
