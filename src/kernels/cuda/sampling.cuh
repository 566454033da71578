// The sampling step on the GPU (Backend::sample): one block per row reads its SamplingRow on the
// device and writes its SampledToken; no scratch memory, no host round trip, so a CUDA graph can
// hold it and the engine downloads tokens instead of logits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sampling_layout.h"

namespace tidal::cuda {

// Candidates a row may gather into shared memory (a power of two): the top-k / top-n / top-p
// candidates are sorted there when they are at most this many; else the row takes the global
// path (a threshold search over its logits in L2, then one more pass).
constexpr int32_t kSampleCandidates = 4096;

// Largest vocabulary: the banned-id bitmap and the candidates share one block's shared memory.
constexpr int64_t kMaxSampleVocab = int64_t{1} << 20;

struct SampleParams {
  const float* logits = nullptr;  // [num_rows, vocab]
  int64_t num_rows = 0;
  int64_t vocab = 0;
  const SamplingRow* rows = nullptr;  // [num_rows], read on the device
  const int32_t* banned = nullptr;    // [num_banned]
  int64_t num_banned = 0;
  SampledToken* out = nullptr;  // [num_rows], every word written
  // 0 or a power of two up to kSampleCandidates; 0 sends every row down the global path (tests).
  int32_t max_candidates = kSampleCandidates;
};

// The semantics of kernels/sampling_layout.h. Greedy rows without logprobs cost one read of their
// logits; the top-k/top-p thresholds are found by a search over the float values (8 ranges a
// pass) instead of a sort. Neither allocates nor synchronises.
cudaError_t sample(const SampleParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
