// Balanced packing of replicas onto ranks (internal to eplb; tested through placement_policy).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tidal::eplb {

using RankItems = std::vector<std::vector<int32_t>>;  // per rank: logical ids, any order

// Replicas to place: counts[e] copies of expert e, each weighing weight[e], onto num_ranks ranks
// of slots_per_rank slots (counts sum to num_ranks * slots_per_rank).
struct PackProblem {
  int num_ranks = 0;
  int slots_per_rank = 0;
  int num_logical = 0;
  bool repair_duplicates = false;  // E >= S: one copy per rank is always possible, so enforce it
  std::vector<int> counts;
  std::vector<double> weight;  // load of one replica of each expert
  double tolerance = 0;        // rank loads this close count as equal
};

// Which replicas each rank holds (slot order is decided later), with the derived loads.
struct Packing {
  RankItems rank_items;
  std::vector<double> rank_load;
  std::vector<std::vector<int>> num_held;  // [rank][logical]: copies on that rank

  double max_load() const { return *std::max_element(rank_load.begin(), rank_load.end()); }
};

// Balanced packing: `kept` stays where it is; every other replica goes, heaviest first, onto a
// rank with a free slot, choosing by (no copy of it there yet, lightest, `home` has it, lowest
// index), then pairwise swaps remove duplicates packing could not avoid. `home` (may be null)
// marks ranks whose old slots held the expert, so a replica that was not kept still lands where
// its weights already are when that costs nothing.
Packing pack(const PackProblem& problem, const RankItems& kept,
             const std::vector<std::vector<char>>* home);

// Packings within target_load that start from every replica of old_slots (per new rank, -1 for
// none) in place: local swaps from there (few moves when they reach the target), and dropping kept
// replicas from overloaded ranks then repacking (reaches it more often). May be empty.
std::vector<Packing> keep_in_place_packings(const PackProblem& problem, const RankItems& old_slots,
                                            const std::vector<std::vector<char>>& home,
                                            double target_load);

}  // namespace tidal::eplb
