// Router kernel: one warp per token, its scores in shared memory, the group limit as a mask over
// them, then k warp-wide argmaxes. Taken and excluded experts are marked by a score of -inf, so
// the selection (score + bias) of both is -inf too and never wins.
#include <cmath>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/router.cuh"

namespace tidal::cuda {
namespace {

constexpr int kWarps = 4;

// Expert e's selection: its score plus the bias, if any. -inf stays -inf.
__device__ __forceinline__ float selection(const float* scores, const float* bias, int64_t e) {
  return bias != nullptr ? scores[e] + bias[e] : scores[e];
}

// Softmax of the row (max-subtracted, in f32), or the sigmoid of each logit, into scores.
__device__ void score_row(const float* row, int64_t num_experts, bool sigmoid, int lane,
                          float* scores) {
  if (sigmoid) {
    for (int64_t e = lane; e < num_experts; e += 32) scores[e] = 1.0f / (1.0f + expf(-row[e]));
    return;
  }
  float max_logit = -INFINITY;
  for (int64_t e = lane; e < num_experts; e += 32) max_logit = fmaxf(max_logit, row[e]);
  for (int offset = 16; offset > 0; offset /= 2) {
    max_logit = fmaxf(max_logit, __shfl_xor_sync(0xffffffffu, max_logit, offset));
  }
  float total = 0.0f;
  for (int64_t e = lane; e < num_experts; e += 32) {
    const float value = expf(row[e] - max_logit);
    scores[e] = value;
    total += value;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  for (int64_t e = lane; e < num_experts; e += 32) scores[e] /= total;
}

// Scores every group (a lane per group), ranks the groups (ties to the lower index) and marks
// the experts of all but the topk_groups best as excluded.
__device__ void limit_groups(const RouterParams& p, int lane, float* scores, float* group_scores) {
  const int64_t group_size = p.num_experts / p.num_groups;
  for (int64_t g = lane; g < p.num_groups; g += 32) {
    float best = -INFINITY;
    float second = -INFINITY;
    for (int64_t e = g * group_size; e < (g + 1) * group_size; ++e) {
      const float value = selection(scores, p.selection_bias, e);
      if (value > best) {
        second = best;
        best = value;
      } else if (value > second) {
        second = value;
      }
    }
    // a + b == b + a in floating point: any order of finding the two best sums alike.
    group_scores[g] = p.group_score_top2_sum ? best + second : best;
  }
  __syncwarp();
  for (int64_t g = lane; g < p.num_groups; g += 32) {
    const float mine = group_scores[g];
    int64_t better = 0;
    for (int64_t other = 0; other < p.num_groups; ++other) {
      const float theirs = group_scores[other];
      better += theirs > mine || (theirs == mine && other < g);
    }
    if (better >= p.topk_groups) {
      for (int64_t e = g * group_size; e < (g + 1) * group_size; ++e) scores[e] = -INFINITY;
    }
  }
}

__global__ void __launch_bounds__(kWarps * 32) router_topk_kernel(const RouterParams p) {
  extern __shared__ float scores_shared[];
  __shared__ float group_scores_shared[kWarps][kMaxRouterGroups];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (token >= p.num_tokens) return;  // whole warps only: no block barrier follows
  const int64_t num_experts = p.num_experts;
  float* scores = scores_shared + warp * num_experts;
  score_row(p.logits + token * num_experts, num_experts, p.sigmoid, lane, scores);
  __syncwarp();
  if (p.num_groups > 1) {
    limit_groups(p, lane, scores, group_scores_shared[warp]);
    __syncwarp();
  }

  // Lane j keeps choice j's id and weight until the end.
  int32_t my_id = 0;
  float my_weight = 0.0f;
  float chosen_total = 0.0f;
  for (int64_t j = 0; j < p.k; ++j) {
    // Each lane's best untaken expert, then the warp's; equal values go to the lower index.
    float best = -INFINITY;
    int best_index = 0x7fffffff;
    for (int64_t e = lane; e < num_experts; e += 32) {
      const float value = selection(scores, p.selection_bias, e);
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
    // Without a bias the selection is the score itself.
    const float weight = p.selection_bias != nullptr ? scores[best_index] : best;
    __syncwarp();
    if (lane == 0) scores[best_index] = -INFINITY;  // taken
    if (lane == j) {
      my_id = best_index;
      my_weight = weight;
    }
    chosen_total += weight;  // in j order, as the CPU reference sums
    __syncwarp();
  }
  if (lane < p.k) {
    const float weight = p.renormalize ? my_weight / chosen_total : my_weight;
    p.topk_ids[token * p.k + lane] = my_id;
    p.topk_weights[token * p.k + lane] = weight * p.scaling;
  }
}

}  // namespace

cudaError_t router_topk_f32(const RouterParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0) return cudaSuccess;
  const int64_t experts = params.num_experts;
  const int64_t groups = params.num_groups;
  if (experts <= 0 || experts > kMaxRouterExperts || params.k <= 0 || params.k > experts ||
      params.k > kMaxRouterTopk || groups <= 0 || groups > kMaxRouterGroups ||
      experts % groups != 0 || params.topk_groups <= 0 || params.topk_groups > groups ||
      params.k > params.topk_groups * (experts / groups)) {
    return cudaErrorInvalidValue;
  }
  const auto shared_bytes = static_cast<size_t>(kWarps * experts) * sizeof(float);
  router_topk_kernel<<<grid_for(params.num_tokens, kWarps, 0x7fffffffu), kWarps * 32, shared_bytes,
                       stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
