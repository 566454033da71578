// Decode attention (one new token per sequence), split-KV: each sequence's context is cut into
// splits of a fixed number of keys, one block per (sequence, KV head, split) serves every query
// head of the GQA group (each key and value is read from memory once), and a second kernel
// merges the splits' partial softmax states.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/attention.cuh"

namespace tidal::cuda {

// Whether decode_attention_bf16 takes this step: every sequence has exactly one new token
// (num_tokens == num_seqs and max_query_len == 1), head_dim a multiple of 8 up to 128, and at
// most 16 query heads per KV head.
bool decode_attention_supports(const PagedAttentionParams& params, int64_t max_query_len);

// Bytes of device workspace decode_attention_bf16 needs (room for the splits' partial outputs).
// It depends only on the heads and head_dim (0 for no sequences), never on the batch or the
// context lengths, so one scratch buffer serves every step and every replay of a CUDA graph.
size_t decode_attention_workspace_bytes(const PagedAttentionParams& params);

// The same contract as paged_attention_bf16 for such a step. `workspace` holds at least
// decode_attention_workspace_bytes(params) bytes (else cudaErrorInvalidValue). Allocates nothing
// and never synchronises: the context lengths are read on the device, and splits past a
// sequence's context exit at once.
cudaError_t decode_attention_bf16(const PagedAttentionParams& params, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream);

}  // namespace tidal::cuda
