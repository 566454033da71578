// Placement policy (pure): replica counts from load, balanced packing onto ranks, few weight moves.
#pragma once

#include <span>
#include <vector>

#include "eplb/placement.h"

namespace tidal::eplb {

// Expert loads of one layer are any non-negative measure (tokens routed, a moving average of it),
// indexed by logical expert. An empty span, or all zeros, means uniform load.
//
// The load one physical replica carries is load[e] / num_replicas(e), because replica selection
// spreads an expert's tokens evenly over its replicas; a rank's load is the sum over its slots.

struct PlanOptions {
  // New rank -> old rank it continues (see RankMap); empty means identity_rank_map.
  RankMap rank_map = {};
  // Keep an expert in its current (rank, slot) wherever that does not push the heaviest rank's
  // load over what a from-scratch balanced packing reaches, so few weights move. Off: the
  // from-scratch packing, only its order within each rank still matched to the current slots.
  bool keep_in_place = true;
  // Tolerated rise of the heaviest rank's load over the from-scratch packing, as a fraction
  // (0.05 = 5%), in exchange for keeping more experts in place.
  double max_load_slack = 0.0;
};

// Replicas per logical expert for num_ranks x slots_per_rank slots: one each, then every spare slot
// in turn to the expert with the highest load per replica (DeepSeek's greedy). Ties go to the
// lower expert id, so uniform load hands spares out round-robin. An expert gets at most num_ranks
// replicas when E >= S (one per rank; more would sit on a rank that already has it).
std::vector<int> plan_replica_counts(int num_logical, int num_ranks, int slots_per_rank,
                                     std::span<const double> load = {});

// The start-up placement. Without load: expert e on slot e (contiguous blocks per rank, the order
// expert-parallel code expects when R*S == E), then the spare slots filled round-robin over the
// experts, so no rank holds an expert twice unless E < S. With load: that identity layout,
// re-planned for the load by plan_placement (identity kept where it costs nothing). Throws
// tidal::Error when R < ceil(E / S), naming E, S and the minimum.
Placement initial_placement(int num_logical, int num_ranks, int slots_per_rank,
                            std::span<const double> load = {});

// A placement of current's experts on target_num_ranks ranks of the same S:
//  (a) every logical expert has at least one replica, and every slot is filled;
//  (b) replica counts as plan_replica_counts, except that exact ties go to the counts current
//      already has, then round-robin over the surviving ranks (so each keeps its share);
//  (c) the bound: a from-scratch balanced packing (heaviest replica first onto the lightest rank
//      with a free slot that lacks it; pairwise swaps remove duplicates packing could not avoid)
//      sets the peak rank load P;
//  (d) with keep_in_place, surviving ranks (options.rank_map) start from what they hold, and two
//      searches look for a layout with peak <= P x (1 + max_load_slack): pairwise swaps from the
//      heaviest rank, cheapest in weight copies first; and dropping kept replicas from overloaded
//      ranks, heaviest first, then repacking. Of those and the from-scratch packing, the one that
//      changes the fewest slots wins; within each rank, a slot keeps its expert when it can.
// With keep_in_place and every new rank continuing an old one (a rebalance), the placement in
// service is kept whenever (c)'s bound does not beat its peak, so the heaviest rank's load never
// rises for the same load. Deterministic. Re-planning a placement this returned, for the same load
// and ranks, returns it unchanged. Throws tidal::Error for a bad target size (naming E, S and the minimum), a bad rank
// map, or a load vector of the wrong size or with negative or non-finite entries.
// Cost: tens of ms per layer at E=256 and 300-450 slots, on one core.
Placement plan_placement(const Placement& current, int target_num_ranks,
                         std::span<const double> load = {}, const PlanOptions& options = {});

// Per-rank load (see above) of a placement; uniform when load is empty.
std::vector<double> rank_loads(const Placement& placement, std::span<const double> load = {});
double max_rank_load(const Placement& placement, std::span<const double> load = {});

}  // namespace tidal::eplb
