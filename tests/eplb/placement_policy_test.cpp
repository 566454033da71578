// Placement policy: initial layouts, replica counts, known optimal packings, stability, properties.
#include "eplb/placement_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <numeric>
#include <random>

#include "eplb/eplb_test_util.h"
#include "eplb/placement_diff.h"
#include "eplb/replica_tables.h"

namespace tidal::eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::error_of;
using testing_util::has_duplicate_on_a_rank;

std::vector<int32_t> iota_ids(int count) {
  std::vector<int32_t> ids(count);
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

// Initial layout invariants: expert e on slot e, every expert present, replica counts within one
// of each other (round-robin), and no rank with two copies when E >= S.
void expect_initial_layout(int num_logical, int num_ranks, int slots_per_rank) {
  SCOPED_TRACE(::testing::Message()
               << "E=" << num_logical << " R=" << num_ranks << " S=" << slots_per_rank);
  const Placement placement = initial_placement(num_logical, num_ranks, slots_per_rank);
  ASSERT_EQ(placement.num_physical(), num_ranks * slots_per_rank);
  const std::vector<int32_t>& table = placement.physical_to_logical();
  EXPECT_EQ(std::vector<int32_t>(table.begin(), table.begin() + num_logical),
            iota_ids(num_logical));
  EXPECT_TRUE(std::none_of(table.begin(), table.end(), [](int32_t id) { return id < 0; }));
  int min_replicas = placement.num_physical();
  int max_replicas = 0;
  for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
    min_replicas = std::min(min_replicas, placement.num_replicas(logical_id));
    max_replicas = std::max(max_replicas, placement.num_replicas(logical_id));
  }
  EXPECT_GE(min_replicas, 1);
  EXPECT_LE(max_replicas - min_replicas, 1);
  if (num_logical >= slots_per_rank) {
    EXPECT_FALSE(has_duplicate_on_a_rank(placement)) << placement.to_string();
  }
}

TEST(InitialPlacement, FullLayoutIsTheIdentity) {
  const Placement placement = initial_placement(8, 2, 4);
  EXPECT_EQ(placement.physical_to_logical(), iota_ids(8));
  EXPECT_EQ(placement.max_num_replicas(), 1);
  EXPECT_EQ(initial_placement(128, 4, 32).physical_to_logical(), iota_ids(128));
}

TEST(InitialPlacement, SpareSlotsHoldRoundRobinReplicas) {
  // 8 experts on 5 ranks of 2: rank 4 holds the spare copies of experts 0 and 1.
  const Placement placement = initial_placement(8, 5, 2);
  EXPECT_EQ(placement.to_string(),
            "rank 0: 0 1 | rank 1: 2 3 | rank 2: 4 5 | rank 3: 6 7 | rank 4: 0 1");
  EXPECT_FALSE(has_duplicate_on_a_rank(placement));
  expect_initial_layout(8, 5, 2);
  expect_initial_layout(12, 5, 3);
  expect_initial_layout(128, 3, 43);
  expect_initial_layout(128, 4, 32);
  expect_initial_layout(5, 3, 3);
  expect_initial_layout(16, 7, 4);
  expect_initial_layout(4, 3, 4);
}

TEST(InitialPlacement, UnevenShapes) {
  // 12 on 5 x 3: the all-spare last rank takes 0 1 2.
  EXPECT_EQ(initial_placement(12, 5, 3).to_string(),
            "rank 0: 0 1 2 | rank 1: 3 4 5 | rank 2: 6 7 8 | rank 3: 9 10 11 | rank 4: 0 1 2");
  // 128 on 3 x 43: one spare slot, on rank 2, holds expert 0 (which lives on rank 0).
  const Placement big = initial_placement(128, 3, 43);
  EXPECT_EQ(big.logical_at(2, 42), 0);
  EXPECT_THAT(big.replicas(0), ElementsAre(0, 128));
  // 5 on 3 x 3: rank 1 holds 3 4 and a spare; no rank holds a copy twice.
  EXPECT_EQ(initial_placement(5, 3, 3).to_string(),
            "rank 0: 0 1 2 | rank 1: 3 4 0 | rank 2: 1 2 3");
}

TEST(InitialPlacement, FewerExpertsThanSlotsDuplicates) {
  // E < S: duplicates on a rank are unavoidable, and every slot is still filled.
  const Placement placement = initial_placement(2, 2, 4);
  EXPECT_EQ(placement.to_string(), "rank 0: 0 1 0 1 | rank 1: 0 1 0 1");
}

TEST(InitialPlacement, RejectsTooFewRanks) {
  const std::string message = error_of([] { initial_placement(12, 3, 3); });
  EXPECT_THAT(message, HasSubstr("E=12"));
  EXPECT_THAT(message, HasSubstr("S=3"));
  EXPECT_THAT(message, HasSubstr("at least ceil(E/S)=4 ranks"));
  EXPECT_THAT(error_of([] { plan_placement(initial_placement(128, 3, 43), 2); }),
              HasSubstr("E=128 logical experts with S=43 slots per rank need at least "
                        "ceil(E/S)=3 ranks, got R=2"));
}

TEST(InitialPlacement, WithLoadKeepsIdentityWhereFree) {
  // One hot expert: both spare slots take it, on ranks that do not already hold it.
  const std::vector<double> load = {1, 1, 1, 100, 1, 1, 1, 1};
  const Placement placement = initial_placement(8, 5, 2, load);
  EXPECT_EQ(placement.num_replicas(3), 3);
  EXPECT_FALSE(has_duplicate_on_a_rank(placement));
  EXPECT_EQ(placement.logical_at(1, 1), 3);  // the original copy stayed on slot 3
}

TEST(ReplicaCounts, UniformIsRoundRobin) {
  EXPECT_THAT(plan_replica_counts(4, 3, 2), ElementsAre(2, 2, 1, 1));
  EXPECT_THAT(plan_replica_counts(4, 3, 4), ElementsAre(3, 3, 3, 3));
  // All-zero load says nothing, so it counts as uniform.
  const std::vector<double> zeros(4, 0.0);
  EXPECT_THAT(plan_replica_counts(4, 3, 2, zeros), ElementsAre(2, 2, 1, 1));
}

TEST(ReplicaCounts, HotExpertGetsAllSpares) {
  const std::vector<double> load = {1, 1, 1, 1, 1, 50, 1, 1};
  EXPECT_THAT(plan_replica_counts(8, 5, 2, load), ElementsAre(1, 1, 1, 1, 1, 3, 1, 1));
}

TEST(ReplicaCounts, HighestLoadPerReplicaFirst) {
  // 3 spares: 9 -> (9/2=4.5 vs 6) 6 -> (4.5 vs 3) 9 again -> counts 3, 2.
  const std::vector<double> load = {9, 6, 1, 1};
  EXPECT_THAT(plan_replica_counts(4, 7, 1, load), ElementsAre(3, 2, 1, 1));
}

TEST(ReplicaCounts, AtMostOneReplicaPerRankWhenEAtLeastS) {
  const std::vector<double> load = {1000, 1, 1, 1};
  EXPECT_THAT(plan_replica_counts(4, 3, 4, load), ElementsAre(3, 3, 3, 3));
  EXPECT_THAT(plan_replica_counts(4, 2, 3, load), ElementsAre(2, 2, 1, 1));
}

TEST(ReplicaCounts, RejectsBadLoad) {
  EXPECT_THAT(error_of([] {
                plan_replica_counts(4, 2, 2, std::vector<double>{1, 2});
              }),
              HasSubstr("load has 2 entries but there are E=4"));
  EXPECT_THAT(error_of([] {
                plan_replica_counts(2, 2, 1, std::vector<double>{1, -1});
              }),
              HasSubstr("load of logical expert 1 is -1"));
  EXPECT_THAT(error_of([] {
                plan_replica_counts(2, 2, 1, std::vector<double>{NAN, 1});
              }),
              HasSubstr("finite"));
}

TEST(PlanPlacement, PacksPerfectlyWhenLoadsAllowIt) {
  // {5,1} {4,2} {3,3}: every rank carries 6.
  const std::vector<double> load = {5, 4, 3, 3, 2, 1};
  const Placement placement = plan_placement(initial_placement(6, 3, 2), 3, load);
  EXPECT_THAT(rank_loads(placement, load), ElementsAre(6, 6, 6));
  // {4,1} {3,2}, starting from the identity {4,3} {2,1} (max 7).
  const std::vector<double> four = {4, 3, 2, 1};
  const Placement packed = plan_placement(initial_placement(4, 2, 2), 2, four);
  EXPECT_THAT(rank_loads(packed, four), ElementsAre(5, 5));
}

TEST(PlanPlacement, HotExpertIsOnEveryRankItCanBe) {
  // 6 slots, 4 experts: the hot one takes both spares and sits once on each rank.
  const std::vector<double> load = {8, 2, 1, 1};
  const Placement placement = plan_placement(initial_placement(4, 3, 2), 3, load);
  EXPECT_EQ(placement.num_replicas(0), 3);
  for (int rank_idx = 0; rank_idx < 3; ++rank_idx) {
    const std::vector<int32_t> local = placement.local_slot_to_logical(rank_idx);
    EXPECT_EQ(std::count(local.begin(), local.end(), 0), 1) << placement.to_string();
  }
  EXPECT_DOUBLE_EQ(max_rank_load(placement, load), 8.0 / 3 + 2);
}

TEST(PlanPlacement, ReplanningIsAFixedPoint) {
  const std::vector<double> load = {7, 1, 3, 3, 9, 2, 2, 5, 1, 1, 4, 6};
  const Placement first = plan_placement(initial_placement(12, 5, 3), 5, load);
  const Placement second = plan_placement(first, 5, load);
  EXPECT_LE(max_rank_load(second, load), max_rank_load(first, load));
  EXPECT_EQ(second, first) << first.to_string() << "\n" << second.to_string();
  EXPECT_TRUE(plan_moves(first, second, identity_rank_map(5, 5)).moves.empty());
}

TEST(PlanPlacement, KeepsInPlaceWhatCostsNothing) {
  // Balanced already (identity, uniform, no spares): nothing moves.
  const Placement identity = initial_placement(16, 4, 4);
  EXPECT_EQ(plan_placement(identity, 4), identity);
  // The identity pairs {4,1} {3,2} {2.5,2.5} {1,4} are already perfect; a from-scratch packing
  // reaches the same max with other pairs, so keeping is free and must win.
  const std::vector<double> load = {4, 1, 3, 2, 2.5, 2.5, 1, 4};
  const Placement start = initial_placement(8, 4, 2);
  const Placement kept = plan_placement(start, 4, load);
  const Placement scratch = plan_placement(start, 4, load, {.keep_in_place = false});
  EXPECT_EQ(kept, start);
  EXPECT_NE(scratch, start);
  EXPECT_DOUBLE_EQ(max_rank_load(kept, load), max_rank_load(scratch, load));
}

TEST(PlanPlacement, SlackTradesLoadForMoves) {
  // Identity {4,3} {2,1} peaks at 7; the balanced {4,1} {3,2} at 5.
  const std::vector<double> load = {4, 3, 2, 1};
  const Placement start = initial_placement(4, 2, 2);
  EXPECT_EQ(plan_placement(start, 2, load, {.max_load_slack = 0.5}), start);  // 7 <= 7.5
  // 7 > 6.5: must rebalance, but any peak up to 6.5 will do.
  const Placement loose = plan_placement(start, 2, load, {.max_load_slack = 0.3});
  EXPECT_LE(max_rank_load(loose, load), 6.5);
  EXPECT_DOUBLE_EQ(max_rank_load(plan_placement(start, 2, load), load), 5);
  EXPECT_THAT(error_of([&] { plan_placement(start, 2, load, {.max_load_slack = -1}); }),
              HasSubstr("max_load_slack"));
}

// Fixed-seed property test over random shapes, loads and rank maps.
TEST(PlanPlacement, PropertiesHoldForRandomShapesAndLoads) {
  std::mt19937 rng(20261128);
  auto uniform_int = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  int num_cases = 0;
  for (int case_idx = 0; case_idx < 400; ++case_idx) {
    const int num_logical = uniform_int(1, 48);
    const int slots_per_rank = uniform_int(1, 12);
    const int min_ranks = min_num_ranks(num_logical, slots_per_rank);
    const int old_num_ranks = uniform_int(min_ranks, min_ranks + 5);
    const int new_num_ranks = uniform_int(min_ranks, min_ranks + 5);
    std::vector<double> load;
    switch (case_idx % 4) {
      case 0:
        break;  // uniform
      case 1:
        for (int idx = 0; idx < num_logical; ++idx) load.push_back(uniform_int(0, 1000));
        break;
      case 2:  // heavy-tailed, as real routing is
        for (int idx = 0; idx < num_logical; ++idx) {
          load.push_back(std::pow(std::uniform_real_distribution<double>(0, 1)(rng), 4) * 1e4);
        }
        break;
      default:  // a few hot experts, the rest idle
        load.assign(num_logical, 0.0);
        for (int idx = 0; idx < 3; ++idx) load[uniform_int(0, num_logical - 1)] += 100;
    }
    // Random rank map: a random subset of old ranks survives in random order, the rest fresh.
    std::vector<int> old_ranks(old_num_ranks);
    std::iota(old_ranks.begin(), old_ranks.end(), 0);
    std::shuffle(old_ranks.begin(), old_ranks.end(), rng);
    RankMap rank_map(new_num_ranks, -1);
    const int num_surviving = uniform_int(0, std::min(old_num_ranks, new_num_ranks));
    for (int idx = 0; idx < num_surviving; ++idx) rank_map[idx] = old_ranks[idx];
    std::shuffle(rank_map.begin(), rank_map.end(), rng);

    SCOPED_TRACE(::testing::Message()
                 << "case " << case_idx << " E=" << num_logical << " S=" << slots_per_rank << " R "
                 << old_num_ranks << " -> " << new_num_ranks);
    const Placement initial = initial_placement(num_logical, old_num_ranks, slots_per_rank);
    if (num_logical >= slots_per_rank) {
      EXPECT_FALSE(has_duplicate_on_a_rank(initial)) << initial.to_string();
    }
    const Placement old_placement = plan_placement(initial, old_num_ranks, load);
    const double slack = std::array{0.0, 0.0, 0.01, 0.05}[case_idx / 4 % 4];
    const Placement placement = plan_placement(old_placement, new_num_ranks, load,
                                               {.rank_map = rank_map, .max_load_slack = slack});
    ASSERT_EQ(placement.num_ranks(), new_num_ranks);
    for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
      ASSERT_GE(placement.num_replicas(logical_id), 1);
    }
    for (const int32_t logical_id : placement.physical_to_logical()) ASSERT_GE(logical_id, 0);
    if (num_logical >= slots_per_rank) {
      EXPECT_FALSE(has_duplicate_on_a_rank(placement)) << placement.to_string();
    }
    // Fits the fixed device tables.
    const TableShape shape = table_shape(num_logical, slots_per_rank, new_num_ranks);
    EXPECT_LE(placement.max_num_replicas(), shape.replica_width);
    // Keeping in place never costs peak load over the from-scratch packing.
    const Placement scratch = plan_placement(old_placement, new_num_ranks, load,
                                             {.rank_map = rank_map, .keep_in_place = false});
    const double peak = max_rank_load(placement, load);
    EXPECT_LE(peak, max_rank_load(scratch, load) * (1 + slack + 1e-9));
    // And it moves no more than the from-scratch packing.
    EXPECT_LE(testing_util::num_changed_slots(old_placement, placement, rank_map),
              testing_util::num_changed_slots(old_placement, scratch, rank_map));
    // Re-planning for the same load and ranks: same placement, no moves, peak does not rise.
    const Placement again =
        plan_placement(placement, new_num_ranks, load, {.max_load_slack = slack});
    EXPECT_EQ(again, placement) << placement.to_string() << "\n" << again.to_string();
    EXPECT_LE(max_rank_load(again, load), peak * (1 + 1e-12));
    // A rebalance for a new load (same ranks): the heaviest rank's load under that load never
    // rises over what the placement in service gives it.
    std::vector<double> next_load(static_cast<size_t>(num_logical));
    for (double& value : next_load) value = std::pow(uniform_int(0, 1000) / 1000.0, 3) * 1e3;
    const Placement rebalanced = plan_placement(placement, new_num_ranks, next_load);
    EXPECT_LE(max_rank_load(rebalanced, next_load),
              max_rank_load(placement, next_load) * (1 + 1e-12))
        << placement.to_string() << "\n"
        << rebalanced.to_string();
    // The moves turn the old buffers into the new layout.
    const MovePlan moves = plan_moves(old_placement, placement, rank_map);
    EXPECT_EQ(testing_util::apply_moves(old_placement, new_num_ranks, rank_map, moves),
              placement.physical_to_logical());
    EXPECT_EQ(static_cast<int>(moves.moves.size()),
              testing_util::num_changed_slots(old_placement, placement, rank_map));
    ++num_cases;
  }
  EXPECT_EQ(num_cases, 400);
}

}  // namespace
}  // namespace tidal::eplb
