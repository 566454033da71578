// Recovery from lost ranks: every expert placed again, survivors' experts kept where they are, the
// lost ones read back into empty or spare slots spread over the survivors, and refusal when too
// few slots survive.
#include "eplb/recovery_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

namespace tidal::eplb {
namespace {

using ::testing::HasSubstr;

using Held = std::vector<std::vector<int32_t>>;  // [surviving rank][local slot]

// Applies the loads to the held slots and checks the result is the plan's placement, that every
// expert which survived somewhere still has a copy it had, and that every expert is placed.
void check_layer(const Held& held, const LayerRecovery& layer, int num_logical,
                 int slots_per_rank) {
  std::vector<int32_t> slots;
  for (const auto& rank : held) slots.insert(slots.end(), rank.begin(), rank.end());
  const std::vector<int32_t> before = slots;
  for (const ExpertLoad& load : layer.loads) {
    const size_t slot = static_cast<size_t>(load.rank_idx * slots_per_rank + load.slot_idx);
    EXPECT_NE(before[slot], load.logical_id) << "a load rewrites what the slot holds";
    slots[slot] = load.logical_id;
  }
  EXPECT_EQ(slots, layer.next.physical_to_logical());
  for (int32_t e = 0; e < num_logical; ++e) {
    EXPECT_GE(layer.next.num_replicas(e), 1) << "expert " << e << " is not placed";
    bool survived = false, kept = false;
    for (size_t slot = 0; slot < before.size(); ++slot) {
      survived = survived || before[slot] == e;
      kept = kept || (before[slot] == e && slots[slot] == e);
    }
    EXPECT_EQ(survived, kept) << "expert " << e << " lost its last surviving copy";
  }
}

TEST(PlanRecovery, ExpertsTheLostRankHeldAloneAreReadBackSpreadOverSurvivors) {
  // 8 experts on 3 ranks of 4 slots (experts 0..3 twice); rank 1 with {4,5,6,7} is lost.
  const Held held = {{0, 1, 2, 3}, {0, 1, 2, 3}};
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 8, .slots_per_rank = 4, .held = {held}}).value();
  ASSERT_EQ(plan.layers.size(), 1u);
  check_layer(held, plan.layers[0], 8, 4);
  EXPECT_EQ(plan.num_loads, 4);
  std::map<int, int> received;
  for (const ExpertLoad& load : plan.layers[0].loads) ++received[load.rank_idx];
  EXPECT_EQ(received[0], 2);
  EXPECT_EQ(received[1], 2);
}

TEST(PlanRecovery, NothingMovesWhenSurvivorsHoldEveryExpert) {
  // The lost rank's experts all had replicas: the tables simply stop routing to it.
  const Held held = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 8, .slots_per_rank = 4, .held = {held}}).value();
  EXPECT_EQ(plan.num_loads, 0);
  EXPECT_EQ(plan.layers[0].next.physical_to_logical(),
            (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(PlanRecovery, UnknownSlotsStayEmptyWhenEveryExpertSurvives) {
  // Rank 1's last two slots broke off mid-move (-1); their experts live elsewhere.
  const Held held = {{4, 5, 6, 7}, {0, 1, -1, -1}, {2, 3, 4, 5}};
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 8, .slots_per_rank = 4, .held = {held}}).value();
  check_layer(held, plan.layers[0], 8, 4);
  EXPECT_EQ(plan.num_loads, 0);
}

TEST(PlanRecovery, UnknownSlotsAreFilledBeforeSpareCopies) {
  // Expert 2 was lost; rank 0's unknown slot takes it rather than a copy of expert 0.
  const Held held = {{0, -1}, {0, 1}};
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 3, .slots_per_rank = 2, .held = {held}}).value();
  check_layer(held, plan.layers[0], 3, 2);
  ASSERT_EQ(plan.layers[0].loads.size(), 1u);
  EXPECT_EQ(plan.layers[0].loads[0].logical_id, 2);
  EXPECT_EQ(plan.layers[0].loads[0].rank_idx, 0);
  EXPECT_EQ(plan.layers[0].loads[0].slot_idx, 1);
  EXPECT_EQ(plan.layers[0].next.num_replicas(0), 2);
}

TEST(PlanRecovery, SpareCopiesOfTheMostReplicatedExpertGiveWayFirst) {
  // Expert 0 has three copies, 1 two; 2 and 3 were lost with their rank.
  const Held held = {{0, 0, 1}, {0, 1, 4}};
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 5, .slots_per_rank = 3, .held = {held}}).value();
  const LayerRecovery& layer = plan.layers[0];
  check_layer(held, layer, 5, 3);
  EXPECT_EQ(plan.num_loads, 2);
  // Expert 0 gives up two copies (3 -> 2 -> 1 would leave 1 with two): first 0 (3 copies), then a
  // tie of 0 and 1 at two copies each.
  EXPECT_EQ(layer.next.num_replicas(0) + layer.next.num_replicas(1), 3);
  EXPECT_GE(layer.next.num_replicas(1), 1);
}

TEST(PlanRecovery, LayersAreIndependent) {
  const Held first = {{0, 1}, {2, 3}};
  const Held second = {{0, 0}, {1, 1}};  // 2 and 3 lost in this layer only
  const RecoveryPlan plan =
      plan_recovery({.num_logical = 4, .slots_per_rank = 2, .held = {first, second}}).value();
  EXPECT_TRUE(plan.layers[0].loads.empty());
  check_layer(second, plan.layers[1], 4, 2);
  EXPECT_EQ(plan.layers[1].loads.size(), 2u);
  EXPECT_EQ(plan.num_loads, 2);
}

TEST(PlanRecovery, TooFewSurvivingSlotsIsRefused) {
  const Result<RecoveryPlan> plan =
      plan_recovery({.num_logical = 8, .slots_per_rank = 3, .held = {{{0, 1, 2}, {3, 4, 5}}}});
  ASSERT_FALSE(plan.is_ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("2 surviving ranks cannot hold all 8 experts"));
}

}  // namespace
}  // namespace tidal::eplb
