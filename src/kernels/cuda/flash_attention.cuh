// Prefill attention on the tensor cores (FlashAttention-2 style): a block takes 64 or 128 queries
// of one sequence and one head, walks the sequence's keys in tiles of 64 through the page table,
// and keeps S = QK^T, the online softmax and O += PV in registers (mma.sync bf16, f32
// accumulation).
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"

namespace tidal::cuda {

constexpr int64_t kFlashMaxHeadDim = 128;

// Whether flash_attention_bf16 takes this shape (head_dim a multiple of 16, at most 128; below 64
// it runs as 64, below 128 as 128, with zeros).
bool flash_attention_supports(const PagedAttentionParams& params);

// The same contract as paged_attention_bf16; `max_query_len` is the most new tokens of any
// sequence (it sizes the grid). Probabilities are rounded to bf16 before the PV product.
cudaError_t flash_attention_bf16(const PagedAttentionParams& params, int64_t max_query_len,
                                 cudaStream_t stream);

}  // namespace tidal::cuda
