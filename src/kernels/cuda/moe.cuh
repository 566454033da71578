// The MoE experts on the GPU: assignments grouped by slot, one grouped GEMM launch per
// projection over every local slot (SwiGLU fused into the first), and the weighted combine.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/element.cuh"

namespace tidal::cuda {

struct MoeExpertsParams {
  const __nv_bfloat16* x = nullptr;  // [num_tokens, hidden]
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t k = 0;
  const int32_t* topk_slots = nullptr;  // [num_tokens, k]; < 0 or >= num_slots: no contribution
  const float* topk_weights = nullptr;  // [num_tokens, k]
  const void* gate_up = nullptr;        // [num_slots, 2 * intermediate, hidden]
  const void* down = nullptr;           // [num_slots, hidden, intermediate]
  ElementType weight_type = ElementType::kBF16;
  int64_t num_slots = 0;
  __nv_bfloat16* out = nullptr;  // [num_tokens, hidden]
};

// Scratch bytes moe_experts_bf16 needs for this shape (an upper bound over every routing, so a
// warm-up of the worst batch sizes it once).
size_t moe_experts_workspace_bytes(int64_t num_tokens, int64_t k, int64_t num_slots, int64_t hidden,
                                   int64_t intermediate);

// out[t] = sum_j topk_weights[t, j] * expert(topk_slots[t, j])(x[t]), summed in j order in f32.
// Each expert output row is rounded to bf16 before the sum, exactly as moe_combine_bf16 sees rows
// that came back from other ranks, so expert parallelism never changes a result. Allocates
// nothing and never synchronises (graph-capturable); `workspace` is at least the size above.
cudaError_t moe_experts_bf16(const MoeExpertsParams& params, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

// out[t] = sum_j topk_weights[t, j] * expert_out[t * k + j], in j order from zero, in f32.
cudaError_t moe_combine_bf16(const __nv_bfloat16* expert_out, const float* topk_weights,
                             int64_t num_tokens, int64_t k, int64_t hidden, __nv_bfloat16* out,
                             cudaStream_t stream);

}  // namespace tidal::cuda
