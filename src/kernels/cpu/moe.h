// CPU reference kernels for the MoE block: router softmax + top-k, and the experts over slots.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "kernels/cpu/element.h"

namespace tidal::cpu {

// How the router scores and picks (Backend's RouterSpec, with host pointers).
struct RouterTopkArgs {
  const float* logits = nullptr;  // [tokens, num_experts]
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t k = 0;
  bool sigmoid = false;                   // false: softmax over the row
  const float* selection_bias = nullptr;  // [num_experts] or nullptr
  int64_t num_groups = 1;
  int64_t topk_groups = 1;
  bool group_score_top2_sum = false;
  bool renormalize = false;
  float scaling = 1.0f;
  float* topk_weights = nullptr;  // [tokens, k]
  int32_t* topk_ids = nullptr;    // [tokens, k]
};

// Per row: the scores (softmax or sigmoid), the k largest selection scores (score + bias) among
// the experts of the topk_groups best groups (ties to the lower index), in descending order;
// weights are their scores, renormalised when asked, times scaling (Backend::router_topk).
void router_topk(const RouterTopkArgs& args);

struct MoeExpertsArgs {
  const float* x = nullptr;  // [tokens, hidden]
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t k = 0;
  const int32_t* topk_slots = nullptr;  // [tokens, k]; < 0: no contribution
  const float* topk_weights = nullptr;  // [tokens, k]
  WeightMatrix gate_up = {};            // slot 0's [2 * intermediate, hidden], the others after it
  WeightMatrix down = {};               // slot 0's [hidden, intermediate], the others after it
  int64_t num_slots = 0;
  float* out = nullptr;  // [tokens, hidden]
};

// out[t] = sum_j weights[t, j] * expert_out[t * k + j], summed in j order from zero.
void moe_combine(const float* expert_out, const float* topk_weights, int64_t num_tokens, int64_t k,
                 int64_t hidden, float* out);

// Groups tokens by slot (each expert's weights are converted once per call), then sums each
// token's k expert outputs in top-k order, so a token's result never depends on its batch.
void moe_experts(const MoeExpertsArgs& args);

}  // namespace tidal::cpu
