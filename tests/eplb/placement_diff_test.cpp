// Weight moves: exact results on simulated buffers, local and spread sources, cycles, and the
// number of moves of elastic scale-up and scale-down with S fixed.
#include "eplb/placement_diff.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "eplb/eplb_test_util.h"
#include "eplb/placement_policy.h"

namespace tidal::eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::apply_moves;
using testing_util::error_of;

// Plans moves old -> new and checks that executing them yields the new layout exactly.
MovePlan checked_moves(const Placement& old_placement, const Placement& new_placement,
                       const RankMap& rank_map) {
  const MovePlan plan = plan_moves(old_placement, new_placement, rank_map);
  EXPECT_EQ(apply_moves(old_placement, new_placement.num_ranks(), rank_map, plan),
            new_placement.physical_to_logical());
  int num_sent = 0;
  for (const int count : plan.num_sent_by_old_rank) num_sent += count;
  EXPECT_EQ(num_sent, plan.num_remote);
  EXPECT_EQ(plan.num_local + plan.num_remote, static_cast<int>(plan.moves.size()));
  return plan;
}

TEST(PlanMoves, NothingToMoveBetweenEqualPlacements) {
  const Placement placement = initial_placement(12, 5, 3);
  const MovePlan plan = checked_moves(placement, placement, identity_rank_map(5, 5));
  EXPECT_TRUE(plan.moves.empty());
  EXPECT_THAT(plan.num_sent_by_old_rank, ElementsAre(0, 0, 0, 0, 0));
}

TEST(PlanMoves, SwapNeedsOneStagedRead) {
  const Placement old_placement(2, 2, 1, {0, 1});
  const Placement new_placement(2, 2, 1, {1, 0});
  const MovePlan plan = checked_moves(old_placement, new_placement, identity_rank_map(2, 2));
  ASSERT_EQ(plan.moves.size(), 2u);
  EXPECT_EQ(plan.num_staged, 1);
  EXPECT_TRUE(plan.moves[0].src_overwritten);
  EXPECT_TRUE(plan.moves[1].src_overwritten);
}

TEST(PlanMoves, ChainsAreOrderedWithoutStaging) {
  // Slot 1 takes slot 0's expert while slot 0 takes a fresh copy from rank 1: slot 0 must be
  // read before it is written, which ordering alone achieves.
  const Placement old_placement(3, 2, 2, {0, 1, 2, 2});
  const Placement new_placement(3, 2, 2, {2, 0, 1, 2});
  const MovePlan plan = checked_moves(old_placement, new_placement, identity_rank_map(2, 2));
  EXPECT_EQ(plan.num_staged, 0);
  EXPECT_EQ(plan.moves.size(), 3u);
}

TEST(PlanMoves, ThreeCycleAcrossRanks) {
  const Placement old_placement(3, 3, 1, {0, 1, 2});
  const Placement new_placement(3, 3, 1, {1, 2, 0});
  const MovePlan plan = checked_moves(old_placement, new_placement, identity_rank_map(3, 3));
  EXPECT_EQ(plan.moves.size(), 3u);
  EXPECT_EQ(plan.num_staged, 1);
}

TEST(PlanMoves, PrefersALocalSource) {
  // Rank 0 trades expert 1 (slot 1) for 2, and wants 1 in slot 0 instead of 0: slot 0's copy of
  // 1 comes from its own slot 1, not from rank 1, which also holds 1.
  const Placement old_placement(3, 2, 2, {0, 1, 2, 1});
  const Placement new_placement(3, 2, 2, {1, 2, 0, 1});
  const MovePlan plan = checked_moves(old_placement, new_placement, identity_rank_map(2, 2));
  const auto move = std::find_if(plan.moves.begin(), plan.moves.end(), [](const ExpertMove& m) {
    return m.dst_rank_idx == 0 && m.dst_slot_idx == 0;
  });
  ASSERT_NE(move, plan.moves.end());
  EXPECT_EQ(move->logical_id, 1);
  EXPECT_TRUE(move->is_local);
  EXPECT_EQ(move->src_rank_idx, 0);
  EXPECT_EQ(move->src_slot_idx, 1);
}

TEST(PlanMoves, SpreadsSourcesOverHolders) {
  // Two old ranks hold every expert; the two fresh ranks' 8 copies are sent 4 and 4.
  const Placement old_placement = initial_placement(4, 2, 4);
  const Placement new_placement = plan_placement(old_placement, 4);
  const MovePlan plan = checked_moves(old_placement, new_placement, identity_rank_map(2, 4));
  EXPECT_EQ(plan.num_remote, 8);
  EXPECT_THAT(plan.num_sent_by_old_rank, ElementsAre(4, 4));
  EXPECT_THAT(plan.num_received_by_new_rank, ElementsAre(0, 0, 4, 4));
}

TEST(PlanMoves, RejectsMismatchedPlacements) {
  EXPECT_THAT(error_of([] {
                plan_moves(initial_placement(8, 2, 4), initial_placement(8, 4, 2),
                           identity_rank_map(2, 4));
              }),
              HasSubstr("same experts and slots"));
  EXPECT_THAT(error_of([] {
                plan_moves(initial_placement(8, 2, 4), initial_placement(8, 2, 4), {0, 0});
              }),
              HasSubstr("two new ranks"));
}

// One elastic step with uniform load: plan, check the moves, and return them.
struct Scaled {
  Placement placement;
  MovePlan plan;
};

Scaled scale(const Placement& current, int target_num_ranks, RankMap rank_map = {}) {
  if (rank_map.empty()) rank_map = identity_rank_map(current.num_ranks(), target_num_ranks);
  Placement placement = plan_placement(current, target_num_ranks, {}, {.rank_map = rank_map});
  EXPECT_FALSE(testing_util::has_duplicate_on_a_rank(placement)) << placement.to_string();
  MovePlan plan = checked_moves(current, placement, rank_map);
  return {std::move(placement), std::move(plan)};
}

bool all_moves_land_on_fresh_ranks(const MovePlan& plan, const RankMap& rank_map) {
  return std::all_of(plan.moves.begin(), plan.moves.end(),
                     [&](const ExpertMove& move) { return rank_map[move.dst_rank_idx] < 0; });
}

TEST(ElasticScaling, TwoToFourToTwo) {
  const Placement two = initial_placement(8, 2, 4);
  const Scaled four = scale(two, 4);
  // Up: the old ranks keep everything; only the new ranks' 8 slots are filled.
  EXPECT_EQ(four.plan.moves.size(), 8u);
  EXPECT_TRUE(all_moves_land_on_fresh_ranks(four.plan, identity_rank_map(2, 4)));
  EXPECT_EQ(four.placement.num_replicas(5), 2);
  // Down to ranks {0, 1}: they already hold every expert once; nothing moves.
  const Scaled back = scale(four.placement, 2, {0, 1});
  EXPECT_TRUE(back.plan.moves.empty());
  EXPECT_EQ(back.placement, two);
  // Down to ranks {2, 3}: the same, from the other half.
  EXPECT_TRUE(scale(four.placement, 2, {2, 3}).plan.moves.empty());
}

TEST(ElasticScaling, FourToTwoMovesOnlyTheRemovedRanksExperts) {
  // Ranks 2 and 3 hold copies of 0..7 as well; survivors {0, 2} both hold 0..3, so 4..7 (which
  // only removed ranks 1 and 3 have) is all that moves, onto one of them.
  const Placement four = initial_placement(8, 4, 4);
  const Scaled two = scale(four, 2, {0, 2});
  EXPECT_EQ(two.plan.moves.size(), 4u);
  for (const ExpertMove& move : two.plan.moves) {
    EXPECT_TRUE(move.src_rank_idx == 1 || move.src_rank_idx == 3);
    EXPECT_GE(move.logical_id, 4);
  }
  EXPECT_THAT(two.plan.num_sent_by_old_rank, ElementsAre(0, 2, 0, 2));
}

TEST(ElasticScaling, TwoToThreeToTwo) {
  const Placement two = initial_placement(8, 2, 4);
  const Scaled three = scale(two, 3);
  // The 4 spares double two experts of each old rank, so both old ranks drop to the balanced
  // peak (3) in place and only the new rank's 4 slots are filled.
  EXPECT_EQ(three.plan.moves.size(), 4u);
  EXPECT_TRUE(all_moves_land_on_fresh_ranks(three.plan, identity_rank_map(2, 3)));
  EXPECT_DOUBLE_EQ(max_rank_load(three.placement), 3);
  // Back to {0, 1}: they still hold every expert once; nothing moves.
  const Scaled back = scale(three.placement, 2, {0, 1});
  EXPECT_TRUE(back.plan.moves.empty());
  EXPECT_EQ(back.placement, two);
  // Back to {1, 2} instead: only what rank 0 alone held moves.
  const Scaled other = scale(three.placement, 2, {1, 2});
  for (const ExpertMove& move : other.plan.moves) EXPECT_EQ(move.src_rank_idx, 0);
  EXPECT_LE(other.plan.moves.size(), 2u);
}

TEST(ElasticScaling, OneToTwoToOne) {
  const Placement one = initial_placement(4, 1, 4);
  const Scaled two = scale(one, 2);
  EXPECT_EQ(two.plan.moves.size(), 4u);
  EXPECT_TRUE(all_moves_land_on_fresh_ranks(two.plan, identity_rank_map(1, 2)));
  const Scaled back = scale(two.placement, 1, {0});
  EXPECT_TRUE(back.plan.moves.empty());
  // Keeping only rank 1 also works: it holds every expert.
  EXPECT_TRUE(scale(two.placement, 1, {1}).plan.moves.empty());
}

TEST(ElasticScaling, ThreeToOneToThree) {
  const Placement three = initial_placement(4, 3, 4);
  const Scaled one = scale(three, 1, {2});
  EXPECT_TRUE(one.plan.moves.empty());
  const Scaled again = scale(one.placement, 3, {-1, 0, -1});  // survivor becomes rank 1
  EXPECT_EQ(again.plan.moves.size(), 8u);
  EXPECT_TRUE(all_moves_land_on_fresh_ranks(again.plan, {-1, 0, -1}));
}

TEST(ElasticScaling, RemovingAMiddleRank) {
  // 12 experts on 4 x 4: rank 3 holds spare copies of 0..3. Dropping rank 1 leaves 4..7 with no
  // copy; exactly those move, from rank 1, into rank 3's now redundant slots.
  const Placement four = initial_placement(12, 4, 4);
  const RankMap survivors = {0, 2, 3};
  const Scaled three = scale(four, 3, survivors);
  EXPECT_EQ(three.plan.moves.size(), 4u);
  for (const ExpertMove& move : three.plan.moves) {
    EXPECT_EQ(move.src_rank_idx, 1);
    EXPECT_EQ(move.dst_rank_idx, 2);  // new rank 2 continues old rank 3
  }
  EXPECT_EQ(three.placement.local_slot_to_logical(0), four.local_slot_to_logical(0));
  EXPECT_EQ(three.placement.local_slot_to_logical(1), four.local_slot_to_logical(2));
  // And back to 4 with a fresh rank where rank 1 was. Uniform peak 3 needs two half-load
  // (doubled) experts on every rank, 6 on the old ranks, but only 4 experts get doubled: at least
  // 2 old slots change, plus the fresh rank's 4.
  const Scaled back = scale(three.placement, 4, {0, -1, 1, 2});
  EXPECT_DOUBLE_EQ(max_rank_load(back.placement), 3);
  EXPECT_EQ(back.plan.moves.size(), 6u);
  EXPECT_EQ(back.plan.num_received_by_new_rank[1], 4);
}

TEST(ElasticScaling, UnevenRankCounts) {
  // 128 experts, S = 43: 3 -> 4 -> 3 -> 5 -> 3 ranks.
  Placement placement = initial_placement(128, 3, 43);
  for (const int target : {4, 3, 5, 3}) {
    SCOPED_TRACE(::testing::Message() << placement.num_ranks() << " -> " << target);
    const int old_num_ranks = placement.num_ranks();
    const Scaled next = scale(placement, target);
    const int num_moves = static_cast<int>(next.plan.moves.size());
    if (target > old_num_ranks) {
      // The fresh ranks' slots, plus rebalancing that brings a share of the new half-load
      // replicas onto the old ranks.
      EXPECT_GE(num_moves, (target - old_num_ranks) * 43);
      EXPECT_LE(num_moves, 2 * (target - old_num_ranks) * 43);
      if (old_num_ranks == 3 && target == 4) {
        // The least possible: peak 32 needs 22 half-load (doubled) replicas on every rank, 66
        // on the old ranks. 44 experts get doubled, and the old ranks hold at most 45 of those
        // replicas in place (expert 0 is on ranks 0 and 2 already): at least 21 old slots
        // change, plus the fresh rank's 43.
        EXPECT_EQ(num_moves, 64);
      }
    } else {
      // Down: no more than the removed ranks held (4 -> 3: exactly rank 3's 21 single-copy
      // experts; its 22 doubled ones have a copy left).
      EXPECT_LE(num_moves, (old_num_ranks - target) * 43);
      if (old_num_ranks == 4) {
        EXPECT_EQ(num_moves, 21);
      }
    }
    const double balanced = 128.0 / target;
    EXPECT_LE(max_rank_load(next.placement), balanced + 1);
    placement = next.placement;
  }
}

}  // namespace
}  // namespace tidal::eplb
