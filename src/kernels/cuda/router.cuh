// The MoE router on the GPU: softmax over experts in f32, top-k, optional renormalisation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

// Largest num_experts router_topk takes (its probabilities sit in shared memory).
constexpr int64_t kMaxRouterExperts = 2048;
constexpr int64_t kMaxRouterTopk = 32;

// Per row of logits [tokens, num_experts]: the k largest probabilities (ties to the lower index)
// in descending order, renormalised to sum to one when asked.
cudaError_t router_topk_f32(const float* logits, int64_t num_tokens, int64_t num_experts, int64_t k,
                            bool renormalize, float* topk_weights, int32_t* topk_ids,
                            cudaStream_t stream);

}  // namespace tidal::cuda
