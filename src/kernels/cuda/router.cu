// Router kernel: one warp per token, its probabilities in shared memory, k warp-wide argmaxes.
#include <cmath>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/router.cuh"

namespace tidal::cuda {
namespace {

constexpr int kWarps = 4;

__global__ void __launch_bounds__(kWarps * 32)
    router_topk_kernel(const float* __restrict__ logits, int64_t num_tokens, int64_t num_experts,
                       int64_t k, bool renormalize, float* __restrict__ topk_weights,
                       int32_t* __restrict__ topk_ids) {
  extern __shared__ float probs_shared[];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (token >= num_tokens) return;  // whole warps only: no block barrier follows
  float* probs = probs_shared + warp * num_experts;
  const float* row = logits + token * num_experts;

  float max_logit = -INFINITY;
  for (int64_t e = lane; e < num_experts; e += 32) max_logit = fmaxf(max_logit, row[e]);
  for (int offset = 16; offset > 0; offset /= 2) {
    max_logit = fmaxf(max_logit, __shfl_xor_sync(0xffffffffu, max_logit, offset));
  }
  float total = 0.0f;
  for (int64_t e = lane; e < num_experts; e += 32) {
    const float value = expf(row[e] - max_logit);
    probs[e] = value;
    total += value;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  for (int64_t e = lane; e < num_experts; e += 32) probs[e] /= total;
  __syncwarp();

  float chosen_total = 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    // Each lane's best untaken expert, then the warp's; equal values go to the lower index.
    float best = -INFINITY;
    int best_index = 0x7fffffff;
    for (int64_t e = lane; e < num_experts; e += 32) {
      const float value = probs[e];
      if (value > best) {
        best = value;
        best_index = static_cast<int>(e);
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(0xffffffffu, best, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
      if (other > best || (other == best && other_index < best_index)) {
        best = other;
        best_index = other_index;
      }
    }
    if (best_index >= num_experts) best_index = 0;  // only for NaN rows: stay in bounds
    __syncwarp();
    if (lane == 0) {
      probs[best_index] = -INFINITY;  // taken
      topk_ids[token * k + j] = best_index;
      topk_weights[token * k + j] = best;
    }
    chosen_total += best;  // in j order, as the CPU reference sums
    __syncwarp();
  }
  if (renormalize && lane == 0) {
    for (int64_t j = 0; j < k; ++j) topk_weights[token * k + j] /= chosen_total;
  }
}

}  // namespace

cudaError_t router_topk_f32(const float* logits, int64_t num_tokens, int64_t num_experts, int64_t k,
                            bool renormalize, float* topk_weights, int32_t* topk_ids,
                            cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  if (num_experts <= 0 || num_experts > kMaxRouterExperts || k <= 0 || k > num_experts ||
      k > kMaxRouterTopk) {
    return cudaErrorInvalidValue;
  }
  const auto shared_bytes = static_cast<size_t>(kWarps * num_experts) * sizeof(float);
  router_topk_kernel<<<grid_for(num_tokens, kWarps, 0x7fffffffu), kWarps * 32, shared_bytes,
                       stream>>>(logits, num_tokens, num_experts, k, renormalize, topk_weights,
                                 topk_ids);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
