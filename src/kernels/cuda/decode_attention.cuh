// Decode attention (one new token per sequence): a block per (sequence, KV head) serves every
// query head that shares that KV head (GQA), so each key and value is read from memory once.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"

namespace tidal::cuda {

// Whether decode_attention_bf16 takes this step: every sequence has exactly one new token
// (num_tokens == num_seqs and max_query_len == 1), head_dim a multiple of 8 up to 128, and at
// most 16 query heads per KV head.
bool decode_attention_supports(const PagedAttentionParams& params, int64_t max_query_len);

// The same contract as paged_attention_bf16 for such a step.
cudaError_t decode_attention_bf16(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
