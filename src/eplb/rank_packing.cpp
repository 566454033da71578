// Balanced packing: greedy placement, duplicate repair, and the keep-in-place searches.
#include "eplb/rank_packing.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace tidal::eplb {
namespace {

// Pairwise swaps that take a duplicate off a rank. Each swap removes at least one duplicate and
// creates none, so this ends; it picks the swap that leaves the lighter pair of rank loads.
void repair_duplicates(const PackProblem& problem, Packing& packing) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
      for (size_t item_idx = 0; item_idx < packing.rank_items[rank_idx].size(); ++item_idx) {
        const int32_t dup_id = packing.rank_items[rank_idx][item_idx];
        if (packing.num_held[rank_idx][dup_id] < 2) continue;
        int best_rank = -1;
        size_t best_item = 0;
        double best_peak = 0;
        for (int other_idx = 0; other_idx < problem.num_ranks; ++other_idx) {
          if (other_idx == rank_idx || packing.num_held[other_idx][dup_id] > 0) continue;
          const auto& other_items = packing.rank_items[other_idx];
          for (size_t other_item = 0; other_item < other_items.size(); ++other_item) {
            const int32_t swap_id = other_items[other_item];
            if (packing.num_held[rank_idx][swap_id] > 0) continue;
            const double delta = problem.weight[swap_id] - problem.weight[dup_id];
            const double peak =
                std::max(packing.rank_load[rank_idx] + delta, packing.rank_load[other_idx] - delta);
            if (best_rank < 0 || peak < best_peak - problem.tolerance) {
              best_rank = other_idx;
              best_item = other_item;
              best_peak = peak;
            }
          }
        }
        if (best_rank < 0) continue;
        const int32_t swap_id = packing.rank_items[best_rank][best_item];
        const double delta = problem.weight[swap_id] - problem.weight[dup_id];
        packing.rank_items[rank_idx][item_idx] = swap_id;
        packing.rank_items[best_rank][best_item] = dup_id;
        packing.rank_load[rank_idx] += delta;
        packing.rank_load[best_rank] -= delta;
        --packing.num_held[rank_idx][dup_id];
        ++packing.num_held[rank_idx][swap_id];
        --packing.num_held[best_rank][swap_id];
        ++packing.num_held[best_rank][dup_id];
        changed = true;
      }
    }
  }
}

// Drops kept replicas that overload ranks: on each rank over the target, the heaviest kept ones
// until the kept part alone fits (at least one goes); when no overloaded rank keeps anything, the
// heaviest kept replica anywhere. Returns false when nothing was left to drop.
bool release_kept(const PackProblem& problem, const Packing& packing, double target_load,
                  RankItems& kept) {
  auto lighter = [&](int32_t lhs, int32_t rhs) {
    return problem.weight[lhs] < problem.weight[rhs];
  };
  auto heaviest = [&](std::vector<int32_t>& items) {
    return std::max_element(items.begin(), items.end(), lighter);
  };
  bool released = false;
  for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
    std::vector<int32_t>& items = kept[rank_idx];
    if (packing.rank_load[rank_idx] <= target_load || items.empty()) continue;
    double kept_load = 0;
    for (const int32_t logical_id : items) kept_load += problem.weight[logical_id];
    do {
      const auto item = heaviest(items);
      kept_load -= problem.weight[*item];
      items.erase(item);
      released = true;
    } while (kept_load > target_load && !items.empty());
  }
  if (released) return true;
  int best_rank = -1;
  for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
    if (kept[rank_idx].empty()) continue;
    if (best_rank < 0 || lighter(*heaviest(kept[best_rank]), *heaviest(kept[rank_idx]))) {
      best_rank = rank_idx;
    }
  }
  if (best_rank < 0) return false;
  kept[best_rank].erase(heaviest(kept[best_rank]));
  return true;
}

// Local search from the keep-everything packing: swap a replica of the heaviest rank with a
// lighter one elsewhere until the peak meets the target. Among swaps that bring both ranks within
// the target it takes the one that moves the fewest weights (a replica leaving the rank whose old
// slots held it costs a copy, one arriving where the old slots held it saves one), else the one
// that lowers the pair's peak most. Every swap lowers the sorted rank loads lexicographically,
// so this ends; returns whether the target was met.
bool swap_down(const PackProblem& problem, const std::vector<std::vector<char>>& home,
               double target_load, Packing& packing) {
  const int max_num_swaps = 4 * problem.num_ranks * problem.slots_per_rank;
  for (int swap_idx = 0; swap_idx < max_num_swaps; ++swap_idx) {
    const auto peak = std::max_element(packing.rank_load.begin(), packing.rank_load.end());
    if (*peak <= target_load) return true;
    const int rank_idx = static_cast<int>(peak - packing.rank_load.begin());
    const double rank_load = *peak;
    struct Swap {
      int other_rank_idx = -1;
      size_t item_idx = 0;
      size_t other_item_idx = 0;
      bool fits = false;  // both ranks end within the target
      int cost = 0;       // weight copies it adds
      double pair_peak = 0;
    } best;
    auto better = [&](const Swap& swap) {
      if (best.other_rank_idx < 0) return true;
      if (swap.fits != best.fits) return swap.fits;
      if (swap.fits && swap.cost != best.cost) return swap.cost < best.cost;
      if (std::abs(swap.pair_peak - best.pair_peak) > problem.tolerance) {
        return swap.pair_peak < best.pair_peak;
      }
      return swap.cost < best.cost;
    };
    const auto& items = packing.rank_items[rank_idx];
    for (size_t item_idx = 0; item_idx < items.size(); ++item_idx) {
      const int32_t out_id = items[item_idx];
      for (int other_idx = 0; other_idx < problem.num_ranks; ++other_idx) {
        if (other_idx == rank_idx) continue;
        if (problem.repair_duplicates && packing.num_held[other_idx][out_id] > 0) continue;
        const auto& other_items = packing.rank_items[other_idx];
        for (size_t other_item_idx = 0; other_item_idx < other_items.size(); ++other_item_idx) {
          const int32_t in_id = other_items[other_item_idx];
          if (in_id == out_id) continue;
          if (problem.repair_duplicates && packing.num_held[rank_idx][in_id] > 0) continue;
          const double delta = problem.weight[out_id] - problem.weight[in_id];
          const double new_load = rank_load - delta;
          const double new_other_load = packing.rank_load[other_idx] + delta;
          if (delta <= problem.tolerance || new_other_load >= rank_load - problem.tolerance) {
            continue;
          }
          const Swap swap{.other_rank_idx = other_idx,
                          .item_idx = item_idx,
                          .other_item_idx = other_item_idx,
                          .fits = new_load <= target_load && new_other_load <= target_load,
                          .cost = home[rank_idx][out_id] + home[other_idx][in_id] -
                                  home[rank_idx][in_id] - home[other_idx][out_id],
                          .pair_peak = std::max(new_load, new_other_load)};
          if (better(swap)) best = swap;
        }
      }
    }
    if (best.other_rank_idx < 0) return false;
    const int other_idx = best.other_rank_idx;
    const int32_t out_id = packing.rank_items[rank_idx][best.item_idx];
    const int32_t in_id = packing.rank_items[other_idx][best.other_item_idx];
    const double delta = problem.weight[out_id] - problem.weight[in_id];
    packing.rank_items[rank_idx][best.item_idx] = in_id;
    packing.rank_items[other_idx][best.other_item_idx] = out_id;
    packing.rank_load[rank_idx] -= delta;
    packing.rank_load[other_idx] += delta;
    --packing.num_held[rank_idx][out_id];
    ++packing.num_held[rank_idx][in_id];
    --packing.num_held[other_idx][in_id];
    ++packing.num_held[other_idx][out_id];
  }
  return false;
}

}  // namespace

Packing pack(const PackProblem& problem, const RankItems& kept,
             const std::vector<std::vector<char>>* home) {
  Packing packing;
  packing.rank_items = kept;
  packing.rank_load.assign(problem.num_ranks, 0.0);
  packing.num_held.assign(problem.num_ranks, std::vector<int>(problem.num_logical, 0));
  std::vector<int> num_free = problem.counts;
  for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
    for (const int32_t logical_id : kept[rank_idx]) {
      packing.rank_load[rank_idx] += problem.weight[logical_id];
      ++packing.num_held[rank_idx][logical_id];
      --num_free[logical_id];
    }
  }
  std::vector<int32_t> free_items;
  for (int32_t logical_id = 0; logical_id < problem.num_logical; ++logical_id) {
    free_items.insert(free_items.end(), num_free[logical_id], logical_id);
  }
  std::stable_sort(free_items.begin(), free_items.end(), [&](int32_t lhs, int32_t rhs) {
    return problem.weight[lhs] > problem.weight[rhs];
  });

  for (const int32_t logical_id : free_items) {
    int best = -1;
    for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
      if (static_cast<int>(packing.rank_items[rank_idx].size()) >= problem.slots_per_rank) {
        continue;
      }
      if (best < 0) {
        best = rank_idx;
        continue;
      }
      const bool dup = packing.num_held[rank_idx][logical_id] > 0;
      const bool best_dup = packing.num_held[best][logical_id] > 0;
      if (dup != best_dup) {
        if (!dup) best = rank_idx;
        continue;
      }
      const double diff = packing.rank_load[rank_idx] - packing.rank_load[best];
      if (diff < -problem.tolerance) {
        best = rank_idx;
      } else if (diff <= problem.tolerance && home != nullptr && (*home)[rank_idx][logical_id] &&
                 !(*home)[best][logical_id]) {
        best = rank_idx;
      }
    }
    TIDAL_CHECK(best >= 0, "no free slot left for logical expert ", logical_id);
    packing.rank_items[best].push_back(logical_id);
    packing.rank_load[best] += problem.weight[logical_id];
    ++packing.num_held[best][logical_id];
  }
  if (problem.repair_duplicates) repair_duplicates(problem, packing);
  return packing;
}

std::vector<Packing> keep_in_place_packings(const PackProblem& problem, const RankItems& old_slots,
                                            const std::vector<std::vector<char>>& home,
                                            double target_load) {
  // Keep each old copy the new counts still want, at most one per rank when duplicates matter.
  RankItems all_kept(problem.num_ranks);
  std::vector<int> num_kept(problem.num_logical, 0);
  for (int rank_idx = 0; rank_idx < problem.num_ranks; ++rank_idx) {
    for (const int32_t logical_id : old_slots[rank_idx]) {
      if (logical_id < 0 || num_kept[logical_id] >= problem.counts[logical_id]) continue;
      const auto& items = all_kept[rank_idx];
      if (problem.repair_duplicates &&
          std::find(items.begin(), items.end(), logical_id) != items.end()) {
        continue;
      }
      all_kept[rank_idx].push_back(logical_id);
      ++num_kept[logical_id];
    }
  }
  std::vector<Packing> packings;
  Packing swapped = pack(problem, all_kept, &home);
  if (swap_down(problem, home, target_load, swapped)) packings.push_back(std::move(swapped));
  RankItems kept = all_kept;
  while (true) {
    Packing packing = pack(problem, kept, &home);
    if (packing.max_load() <= target_load) {
      packings.push_back(std::move(packing));
      break;
    }
    if (!release_kept(problem, packing, target_load, kept)) break;
  }
  return packings;
}

}  // namespace tidal::eplb
