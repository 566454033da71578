// CPU reference of the sampling step (Backend::sample): the semantics of kernels/sampling_layout.h
// written as directly as they read, row by row.
#pragma once

#include <cstdint>

#include "kernels/sampling_layout.h"

namespace tidal::cpu {

struct SampleArgs {
  const float* logits = nullptr;  // [num_rows, vocab]
  int64_t num_rows = 0;
  int64_t vocab = 0;
  const SamplingRow* rows = nullptr;  // [num_rows]
  const int32_t* banned = nullptr;    // [num_banned] ids, indexed by each row's banned range
  int64_t num_banned = 0;
  SampledToken* out = nullptr;  // [num_rows], every field written
};

// Throws tidal::Error for a row whose banned range lies outside [0, num_banned).
void sample(const SampleArgs& args);

}  // namespace tidal::cpu
