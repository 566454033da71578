// A request handed from one rank to another mid-generation: everything the receiving rank needs
// to continue it from its tokens so far, as if nothing had happened. The receiver recomputes the
// KV cache from prompt + output (like a preemption by recompute), so no cache moves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/sampling_params.h"

namespace tidal {

struct RequestHandoff {
  std::string id = {};
  std::vector<int32_t> prompt_ids = {};
  SamplingParams params = {};
  std::vector<int32_t> output_ids = {};  // generated so far (already streamed to the client)
  // Bytes of the decoded output already handed to the client: the receiver re-decodes
  // output_ids and streams only what follows, so text is neither lost nor repeated.
  size_t text_sent = 0;
  // The sampling seed (the request's or the one the first rank drew for it): a draw depends on
  // (seed, output index) only, so the receiver draws what the old rank would have drawn.
  uint64_t seed = 0;
  int64_t num_preemptions = 0;
};

}  // namespace tidal
