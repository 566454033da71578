// Placement policy: greedy replica counts, tie-breaks toward the current layout, candidate choice.
#include "eplb/placement_policy.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "eplb/rank_packing.h"

namespace tidal::eplb {
namespace {

std::vector<double> effective_load(std::span<const double> load, int num_logical) {
  if (load.empty()) return std::vector<double>(num_logical, 1.0);
  TIDAL_CHECK(static_cast<int>(load.size()) == num_logical, "load has ", load.size(),
              " entries but there are E=", num_logical, " logical experts");
  bool all_zero = true;
  for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
    const double value = load[logical_id];
    TIDAL_CHECK(std::isfinite(value) && value >= 0, "load of logical expert ", logical_id, " is ",
                value, "; loads must be finite and non-negative");
    all_zero = all_zero && value == 0;
  }
  // No traffic says nothing about which expert is hot; uniform keeps spares round-robin.
  if (all_zero) return std::vector<double>(num_logical, 1.0);
  return {load.begin(), load.end()};
}

void check_shape_or_throw(int num_logical, int num_ranks, int slots_per_rank) {
  const Status shape = check_shape(num_logical, num_ranks, slots_per_rank);
  if (!shape.is_ok()) TIDAL_FAIL(shape.message());
}

// A second copy on a rank that has the expert carries no extra traffic, so it is only worth a
// slot when E < S leaves nothing else to put there.
int max_replicas_per_expert(int num_logical, int num_ranks, int slots_per_rank) {
  return num_logical >= slots_per_rank ? num_ranks : num_ranks * slots_per_rank;
}

// DeepSeek's greedy. Exact ties (compared by cross-multiplication, so 1/3 == 2/6) go first to an
// expert below its preferred count, so re-planning reproduces the counts it is given; then to the
// lower tie_rank. `order`, when given, receives the expert of each spare in turn.
std::vector<int> greedy_counts(const std::vector<double>& load, int num_physical, int cap,
                               const std::vector<int>& preferred, const std::vector<int>& tie_rank,
                               std::vector<int32_t>* order = nullptr) {
  const int num_logical = static_cast<int>(load.size());
  std::vector<int> counts(num_logical, 1);
  for (int spare_idx = num_logical; spare_idx < num_physical; ++spare_idx) {
    int best = -1;
    for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
      if (counts[logical_id] >= cap) continue;
      if (best < 0) {
        best = logical_id;
        continue;
      }
      const double lhs = load[logical_id] * counts[best];
      const double rhs = load[best] * counts[logical_id];
      if (lhs != rhs) {
        if (lhs > rhs) best = logical_id;
        continue;
      }
      const bool wanted = preferred[logical_id] > counts[logical_id];
      const bool best_wanted = preferred[best] > counts[best];
      if (wanted != best_wanted) {
        if (wanted) best = logical_id;
        continue;
      }
      if (tie_rank[logical_id] < tie_rank[best]) best = logical_id;
    }
    TIDAL_CHECK(best >= 0, "no expert can take another replica (cap ", cap, ")");
    ++counts[best];
    if (order != nullptr) order->push_back(best);
  }
  return counts;
}

// Orders each rank's replicas into its slots: a slot whose old expert is still on the rank keeps
// it (no copy); the rest fill the remaining slots in ascending expert order.
std::vector<int32_t> arrange_slots(const Packing& packing, const RankItems& old_slots,
                                   int slots_per_rank, int num_logical) {
  const int num_ranks = static_cast<int>(packing.rank_items.size());
  std::vector<int32_t> physical_to_logical(num_ranks * slots_per_rank, -1);
  std::vector<int> num_unplaced(num_logical, 0);
  for (int rank_idx = 0; rank_idx < num_ranks; ++rank_idx) {
    std::vector<int32_t> items = packing.rank_items[rank_idx];
    std::sort(items.begin(), items.end());
    for (const int32_t logical_id : items) ++num_unplaced[logical_id];
    int32_t* row = physical_to_logical.data() + rank_idx * slots_per_rank;
    for (int slot_idx = 0; slot_idx < slots_per_rank; ++slot_idx) {
      const int32_t old_id = old_slots[rank_idx][slot_idx];
      if (old_id >= 0 && num_unplaced[old_id] > 0) {
        row[slot_idx] = old_id;
        --num_unplaced[old_id];
      }
    }
    int slot_idx = 0;
    for (const int32_t logical_id : items) {
      if (num_unplaced[logical_id] == 0) continue;
      while (row[slot_idx] >= 0) ++slot_idx;
      row[slot_idx] = logical_id;
      --num_unplaced[logical_id];
    }
  }
  return physical_to_logical;
}

// Changed slots (weight copies) of a laid-out placement against the old contents of its ranks.
int num_changed_slots(const std::vector<int32_t>& physical_to_logical, const RankItems& old_slots) {
  int num_changed = 0;
  const int slots_per_rank = static_cast<int>(old_slots.front().size());
  for (size_t slot_id = 0; slot_id < physical_to_logical.size(); ++slot_id) {
    num_changed += physical_to_logical[slot_id] !=
                   old_slots[slot_id / slots_per_rank][slot_id % slots_per_rank];
  }
  return num_changed;
}

std::vector<int> ascending_ids(int count) {
  std::vector<int> ranks(count);
  for (int idx = 0; idx < count; ++idx) ranks[idx] = idx;
  return ranks;
}

}  // namespace

std::vector<int> plan_replica_counts(int num_logical, int num_ranks, int slots_per_rank,
                                     std::span<const double> load) {
  check_shape_or_throw(num_logical, num_ranks, slots_per_rank);
  return greedy_counts(effective_load(load, num_logical), num_ranks * slots_per_rank,
                       max_replicas_per_expert(num_logical, num_ranks, slots_per_rank),
                       std::vector<int>(num_logical, 0), ascending_ids(num_logical));
}

Placement initial_placement(int num_logical, int num_ranks, int slots_per_rank,
                            std::span<const double> load) {
  check_shape_or_throw(num_logical, num_ranks, slots_per_rank);
  const int num_physical = num_ranks * slots_per_rank;
  std::vector<int32_t> physical_to_logical(num_physical, -1);
  for (int32_t logical_id = 0; logical_id < num_logical; ++logical_id) {
    physical_to_logical[logical_id] = logical_id;
  }
  if (!load.empty()) {
    return plan_placement(
        Placement(num_logical, num_ranks, slots_per_rank, std::move(physical_to_logical)),
        num_ranks, load);
  }
  // Uniform spares in greedy order are round-robin; each goes to the first spare slot's rank
  // that lacks it, which for E >= S never fails (a run of S consecutive experts is distinct).
  std::vector<int32_t> pending;
  greedy_counts(std::vector<double>(num_logical, 1.0), num_physical,
                max_replicas_per_expert(num_logical, num_ranks, slots_per_rank),
                std::vector<int>(num_logical, 0), ascending_ids(num_logical), &pending);
  for (int slot_id = num_logical; slot_id < num_physical; ++slot_id) {
    const auto row = physical_to_logical.begin() + (slot_id / slots_per_rank) * slots_per_rank;
    const auto row_end = row + slots_per_rank;
    auto pick = std::find_if(pending.begin(), pending.end(), [&](int32_t logical_id) {
      return std::find(row, row_end, logical_id) == row_end;
    });
    if (pick == pending.end()) pick = pending.begin();
    physical_to_logical[slot_id] = *pick;
    pending.erase(pick);
  }
  return Placement(num_logical, num_ranks, slots_per_rank, std::move(physical_to_logical));
}

Placement plan_placement(const Placement& current, int target_num_ranks,
                         std::span<const double> load, const PlanOptions& options) {
  const int num_logical = current.num_logical();
  const int slots_per_rank = current.slots_per_rank();
  check_shape_or_throw(num_logical, target_num_ranks, slots_per_rank);
  const RankMap rank_map = options.rank_map.empty()
                               ? identity_rank_map(current.num_ranks(), target_num_ranks)
                               : options.rank_map;
  check_rank_map(rank_map, current.num_ranks(), target_num_ranks);
  TIDAL_CHECK(std::isfinite(options.max_load_slack) && options.max_load_slack >= 0,
              "max_load_slack must be finite and non-negative, got ", options.max_load_slack);
  const std::vector<double> expert_load = effective_load(load, num_logical);

  // What each new rank's slots hold now (-1 for fresh ranks), and which experts it already has.
  RankItems old_slots(target_num_ranks, std::vector<int32_t>(slots_per_rank, -1));
  std::vector<std::vector<char>> home(target_num_ranks, std::vector<char>(num_logical, 0));
  std::vector<int> num_surviving(num_logical, 0);
  for (int rank_idx = 0; rank_idx < target_num_ranks; ++rank_idx) {
    if (rank_map[rank_idx] < 0) continue;
    old_slots[rank_idx] = current.local_slot_to_logical(rank_map[rank_idx]);
    for (const int32_t logical_id : old_slots[rank_idx]) {
      if (logical_id < 0) continue;
      home[rank_idx][logical_id] = 1;
      ++num_surviving[logical_id];
    }
  }

  // Exact ties in the greedy (uniform load) go round-robin over the surviving ranks, slot by slot,
  // so each old rank gets its share of spares and stays as light as the others without moves.
  std::vector<int> tie_rank(num_logical, -1);
  int num_ranked = 0;
  for (int slot_idx = 0; slot_idx < slots_per_rank; ++slot_idx) {
    for (int rank_idx = 0; rank_idx < target_num_ranks; ++rank_idx) {
      const int32_t logical_id = old_slots[rank_idx][slot_idx];
      if (logical_id >= 0 && tie_rank[logical_id] < 0) tie_rank[logical_id] = num_ranked++;
    }
  }
  for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
    if (tie_rank[logical_id] < 0) tie_rank[logical_id] = num_ranked++;
  }

  PackProblem problem{
      .num_ranks = target_num_ranks,
      .slots_per_rank = slots_per_rank,
      .num_logical = num_logical,
      .repair_duplicates = num_logical >= slots_per_rank,
      .counts =
          greedy_counts(expert_load, target_num_ranks * slots_per_rank,
                        max_replicas_per_expert(num_logical, target_num_ranks, slots_per_rank),
                        num_surviving, tie_rank),
      .weight = std::vector<double>(num_logical),
      .tolerance = 0,
  };
  double total_load = 0;
  for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
    problem.weight[logical_id] = expert_load[logical_id] / problem.counts[logical_id];
    total_load += expert_load[logical_id];
  }
  problem.tolerance = 1e-9 * total_load / target_num_ranks;

  // The reference ignores the current placement, so the bound it sets depends only on the counts
  // and the load: re-planning a placement this returned finds the same bound and keeps it all.
  const Packing reference = pack(problem, RankItems(target_num_ranks), nullptr);
  const double target_load =
      reference.max_load() * (1 + options.max_load_slack) + problem.tolerance;

  // A rebalance (every new rank continues an old one): the placement in service stays when the
  // bound does not beat it, so the heaviest rank's load never rises for the same load. Its
  // replica counts may differ from the greedy ones (they were planned for an older load).
  const bool all_survive =
      target_num_ranks == current.num_ranks() &&
      std::none_of(rank_map.begin(), rank_map.end(), [](int old_rank) { return old_rank < 0; });
  if (all_survive && options.keep_in_place) {
    std::vector<int32_t> in_service;
    for (const std::vector<int32_t>& slots : old_slots) {
      in_service.insert(in_service.end(), slots.begin(), slots.end());
    }
    Placement kept(num_logical, target_num_ranks, slots_per_rank, std::move(in_service));
    if (max_rank_load(kept, expert_load) <= target_load) return kept;
  }

  // Candidates within the bound; the fewest changed slots wins, the earlier on ties.
  std::vector<Packing> candidates;
  if (options.keep_in_place) {
    candidates = keep_in_place_packings(problem, old_slots, home, target_load);
  }
  candidates.push_back(reference);
  std::vector<int32_t> best_layout;
  int best_changed = 0;
  for (const Packing& packing : candidates) {
    std::vector<int32_t> layout = arrange_slots(packing, old_slots, slots_per_rank, num_logical);
    const int num_changed = num_changed_slots(layout, old_slots);
    if (best_layout.empty() || num_changed < best_changed) {
      best_layout = std::move(layout);
      best_changed = num_changed;
    }
  }
  return Placement(num_logical, target_num_ranks, slots_per_rank, std::move(best_layout));
}

std::vector<double> rank_loads(const Placement& placement, std::span<const double> load) {
  const std::vector<double> expert_load = effective_load(load, placement.num_logical());
  std::vector<double> loads(placement.num_ranks(), 0.0);
  for (int slot_id = 0; slot_id < placement.num_physical(); ++slot_id) {
    const int32_t logical_id = placement.physical_to_logical()[slot_id];
    if (logical_id < 0) continue;
    loads[slot_id / placement.slots_per_rank()] +=
        expert_load[logical_id] / placement.num_replicas(logical_id);
  }
  return loads;
}

double max_rank_load(const Placement& placement, std::span<const double> load) {
  const std::vector<double> loads = rank_loads(placement, load);
  return *std::max_element(loads.begin(), loads.end());
}

}  // namespace tidal::eplb
