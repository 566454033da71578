// The MoE router on the GPU: softmax or sigmoid scores in f32, an optional selection bias and
// group limit, top-k, optional renormalisation, a scaling factor.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

// Largest num_experts router_topk takes (its scores sit in shared memory).
constexpr int64_t kMaxRouterExperts = 2048;
constexpr int64_t kMaxRouterTopk = 32;
// Largest num_groups of a group-limited router (the group scores sit in shared memory).
constexpr int64_t kMaxRouterGroups = 64;

struct RouterParams {
  const float* logits = nullptr;  // [num_tokens, num_experts]
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t k = 0;
  bool sigmoid = false;                   // scores: sigmoid(logit) each, else softmax over the row
  const float* selection_bias = nullptr;  // [num_experts], added for the choice only; or null
  int64_t num_groups = 1;                 // num_experts is a multiple
  int64_t topk_groups = 1;
  bool group_score_top2_sum = false;  // a group's score: its two best selections' sum, else best
  bool renormalize = false;
  float scaling = 1.0f;
  float* topk_weights = nullptr;  // [num_tokens, k]
  int32_t* topk_ids = nullptr;    // [num_tokens, k]
};

// Per row of logits: score each expert, keep the experts of the topk_groups best groups (when
// num_groups > 1), then the k largest selections (score + bias) in descending order, ties to the
// lower index; the weights are their scores, renormalised to sum to one when asked, times
// `scaling`. With the defaults (softmax, no bias, one group, scaling 1) the results are those of
// the plain softmax top-k bit for bit.
cudaError_t router_topk_f32(const RouterParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
