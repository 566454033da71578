// plan_scale: refusals with reasons, which ranks leave, renumbering, and placements that keep
// survivors' experts where they are.
#include "elastic/scale_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "eplb/placement_policy.h"

namespace tidal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ScalePlanInput input_for(int experts, int ranks, int slots, int layers = 2) {
  ScalePlanInput input{.num_logical = experts, .slots_per_rank = slots, .max_num_ranks = 8};
  for (int layer = 0; layer < layers; ++layer) {
    input.current.push_back(eplb::initial_placement(experts, ranks, slots));
  }
  return input;
}

std::string refusal(const ScalePlanInput& input, ScaleRequest request) {
  const Result<ScalePlan> plan = plan_scale(input, request);
  EXPECT_FALSE(plan.is_ok());
  return plan.is_ok() ? "" : plan.status().message();
}

TEST(ScalePlan, RefusesImpossibleTargetsWithTheReason) {
  const ScalePlanInput input = input_for(8, 2, 4);
  EXPECT_THAT(refusal(input, {.target_ranks = 0}), HasSubstr("cannot scale to 0 ranks"));
  EXPECT_THAT(refusal(input, {.target_ranks = 1}), HasSubstr("at least ceil(E/S)=2 ranks"));
  EXPECT_THAT(refusal(input, {.target_ranks = 9}), HasSubstr("8 devices"));
  EXPECT_THAT(refusal(input_for(8, 4, 4), {.target_ranks = 3, .remove_ranks = {1, 2}}),
              HasSubstr("removes 1 ranks; remove_ranks names 2"));
  EXPECT_THAT(refusal(input_for(8, 4, 4), {.target_ranks = 3, .remove_ranks = {7}}),
              HasSubstr("the ranks are 0..3"));
  EXPECT_THAT(refusal(input_for(8, 4, 4), {.target_ranks = 2, .remove_ranks = {1, 1}}),
              HasSubstr("twice"));
}

TEST(ScalePlan, SameSizeChangesNothing) {
  const ScalePlanInput input = input_for(8, 2, 4);
  const Result<ScalePlan> plan = plan_scale(input, {.target_ranks = 2});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_TRUE(plan.value().removed.empty());
  EXPECT_THAT(plan.value().rank_map, ElementsAre(0, 1));
  EXPECT_EQ(plan.value().next, input.current);
}

TEST(ScalePlan, ScaleUpAppendsFreshRanksAndKeepsSurvivorsExperts) {
  const ScalePlanInput input = input_for(8, 2, 4);
  const Result<ScalePlan> plan = plan_scale(input, {.target_ranks = 4});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_THAT(plan.value().rank_map, ElementsAre(0, 1, -1, -1));
  EXPECT_EQ(plan.value().num_fresh(), 2);
  for (const eplb::Placement& next : plan.value().next) {
    EXPECT_EQ(next.num_ranks(), 4);
    EXPECT_EQ(next.local_slot_to_logical(0), input.current[0].local_slot_to_logical(0));
    EXPECT_EQ(next.local_slot_to_logical(1), input.current[0].local_slot_to_logical(1));
  }
}

TEST(ScalePlan, ScaleDownRemovesTheLeastLoadedRanksOrTheNamedOnes) {
  ScalePlanInput input = input_for(8, 4, 4);
  input.outstanding_tokens = {50, 10, 70, 10};
  Result<ScalePlan> plan = plan_scale(input, {.target_ranks = 2});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_THAT(plan.value().removed, ElementsAre(1, 3));
  EXPECT_THAT(plan.value().rank_map, ElementsAre(0, 2));

  plan = plan_scale(input, {.target_ranks = 3, .remove_ranks = {1}});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_THAT(plan.value().removed, ElementsAre(1));
  EXPECT_THAT(plan.value().rank_map, ElementsAre(0, 2, 3));
  for (const eplb::Placement& next : plan.value().next) {
    EXPECT_EQ(next.num_ranks(), 3);
    for (int e = 0; e < 8; ++e) EXPECT_GE(next.num_replicas(e), 1) << "expert " << e;
  }
}

TEST(ScalePlan, EveryLayerIsPlannedForItsOwnLoad) {
  ScalePlanInput input = input_for(8, 2, 4);  // at 3 ranks, 4 spare slots for replicas
  input.load = {{100, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 100}};
  const Result<ScalePlan> plan = plan_scale(input, {.target_ranks = 3});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan.value().next[0].num_replicas(0), 3);  // one per rank: the most it may have
  EXPECT_EQ(plan.value().next[0].num_replicas(7), 1);
  EXPECT_EQ(plan.value().next[1].num_replicas(7), 3);
  EXPECT_LT(plan.value().next[1].num_replicas(0), 3);
}

}  // namespace
}  // namespace tidal
