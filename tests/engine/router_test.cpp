// The CPU router (the reference the GPU's is tested against) on hand-worked cases where each rule
// of DeepSeek's routing changes the choice: groups, the group score, the selection bias (which
// chooses but never weighs), renormalisation and the scaling factor.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/backend.h"

namespace tidal {
namespace {

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

Routed route(std::vector<float> logits, int64_t k, RouterSpec spec, std::vector<float> bias = {}) {
  const std::unique_ptr<Backend> cpu = make_backend("cpu");
  const auto experts = static_cast<int64_t>(logits.size());
  Routed out{std::vector<int32_t>(static_cast<size_t>(k)),
             std::vector<float>(static_cast<size_t>(k))};
  const Tensor bias_tensor{.data = bias.data(), .dtype = DType::kF32, .shape = {experts}};
  if (!bias.empty()) spec.selection_bias = &bias_tensor;
  cpu->router_topk(Tensor{.data = logits.data(), .dtype = DType::kF32, .shape = {1, experts}}, spec,
                   Tensor{.data = out.weights.data(), .dtype = DType::kF32, .shape = {1, k}},
                   Tensor{.data = out.ids.data(), .dtype = DType::kI32, .shape = {1, k}});
  return out;
}

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

// Eight experts in four groups of two. Scores sigmoid(logit): 0.5, but expert 4 (logit 1) and
// expert 7 (logit -1). Selection = score + bias:
//   0.6 0.5 | 0.8 0.0 | 0.731 0.7 | 0.4 0.969
// Groups by the sum of their two best: 1.1, 0.8, 1.431, 1.369: groups 2 and 3 stay, so expert 2
// (0.8) is out although it beats expert 4 (0.731); the choice is 7 then 4.
const std::vector<float> kLogits = {0, 0, 0, 0, 1, 0, 0, -1};
const std::vector<float> kBias = {0.1f, 0.0f, 0.3f, -0.5f, 0.0f, 0.2f, -0.1f, 0.7f};

TEST(Router, V3GroupedSigmoidWithSelectionBias) {
  const Routed r = route(kLogits, 2,
                         {.sigmoid = true,
                          .num_groups = 4,
                          .topk_groups = 2,
                          .group_score_top2_sum = true,
                          .renormalize = true,
                          .scaling = 2.5f},
                         kBias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{7, 4}));
  // Weighed by the unbiased scores, renormalised, times 2.5.
  const float total = sigmoid(-1) + sigmoid(1);
  EXPECT_FLOAT_EQ(r.weights[0], sigmoid(-1) / total * 2.5f);
  EXPECT_FLOAT_EQ(r.weights[1], sigmoid(1) / total * 2.5f);
}

TEST(Router, EachRuleChangesTheChoice) {
  // Without groups, expert 2 is in.
  EXPECT_EQ(route(kLogits, 2, {.sigmoid = true}, kBias).ids, (std::vector<int32_t>{7, 2}));
  // A group scored by its best expert (V2's group-limited greedy): groups 3 (0.969) and 1 (0.8).
  EXPECT_EQ(route(kLogits, 2, {.sigmoid = true, .num_groups = 4, .topk_groups = 2}, kBias).ids,
            (std::vector<int32_t>{7, 2}));
  // Without the bias: every score 0.5 but expert 4's; groups by their sums 1, 1, 1.231, 0.769
  // keep groups 2 and then 0 (ties to the lower index).
  EXPECT_EQ(
      route(kLogits, 2,
            {.sigmoid = true, .num_groups = 4, .topk_groups = 2, .group_score_top2_sum = true})
          .ids,
      (std::vector<int32_t>{4, 0}));
}

TEST(Router, V2GroupLimitedSoftmaxScaledNotRenormalised) {
  // Softmax over [2, 0 | 1.5, 1.4 | 0, 0]; one of three groups of two is kept. By its best
  // expert, group 0 (expert 0); by the sum of its two, group 1 (e^1.5 + e^1.4 > e^2 + e^0).
  const std::vector<float> logits = {2, 0, 1.5f, 1.4f, 0, 0};
  float total = 0;
  for (const float logit : logits) total += std::exp(logit);
  const Routed best = route(logits, 2, {.num_groups = 3, .topk_groups = 1, .scaling = 16.0f});
  EXPECT_EQ(best.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_FLOAT_EQ(best.weights[0], std::exp(2.0f) / total * 16.0f);
  EXPECT_FLOAT_EQ(best.weights[1], std::exp(0.0f) / total * 16.0f);
  const Routed sum =
      route(logits, 2, {.num_groups = 3, .topk_groups = 1, .group_score_top2_sum = true});
  EXPECT_EQ(sum.ids, (std::vector<int32_t>{2, 3}));
  // Plain top-k over every expert.
  EXPECT_EQ(route(logits, 2, {}).ids, (std::vector<int32_t>{0, 2}));
}

}  // namespace
}  // namespace tidal
