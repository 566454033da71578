// Recovery placement: the lost experts go into empty or spare slots and are read back from disk.
#include "eplb/recovery_plan.h"

#include <algorithm>

#include "common/error.h"

namespace tidal::eplb {
namespace {

LayerRecovery plan_layer(int num_logical, int slots_per_rank,
                         const std::vector<std::vector<int32_t>>& held) {
  const int num_ranks = static_cast<int>(held.size());
  std::vector<int32_t> next;
  for (const std::vector<int32_t>& rank_slots : held) {
    TIDAL_CHECK(static_cast<int>(rank_slots.size()) == slots_per_rank, "a survivor reports ",
                rank_slots.size(), " slots, expected ", slots_per_rank);
    for (const int32_t logical_id : rank_slots) {
      TIDAL_CHECK(logical_id >= -1 && logical_id < num_logical, "a survivor's slot holds expert ",
                  logical_id, " of ", num_logical);
      next.push_back(logical_id);
    }
  }
  const std::vector<int32_t> before = next;
  std::vector<int> copies(static_cast<size_t>(num_logical), 0);
  for (const int32_t logical_id : next) {
    if (logical_id >= 0) ++copies[static_cast<size_t>(logical_id)];
  }
  std::vector<int32_t> missing;
  for (int32_t logical_id = 0; logical_id < num_logical; ++logical_id) {
    if (copies[static_cast<size_t>(logical_id)] == 0) missing.push_back(logical_id);
  }
  // Experts each rank receives, so the lost ones spread over the survivors.
  std::vector<int> received(static_cast<size_t>(num_ranks), 0);
  auto rank_of = [&](size_t slot_id) { return static_cast<size_t>(slot_id) / slots_per_rank; };
  for (const int32_t logical_id : missing) {
    // An empty slot on the rank that received least; else a second copy of the expert with the
    // most copies (on the rank that received least), so no expert loses its last copy.
    size_t chosen = next.size();
    for (size_t slot_id = 0; slot_id < next.size(); ++slot_id) {
      if (next[slot_id] != -1) continue;
      if (chosen == next.size() || received[rank_of(slot_id)] < received[rank_of(chosen)]) {
        chosen = slot_id;
      }
    }
    if (chosen == next.size()) {
      for (size_t slot_id = 0; slot_id < next.size(); ++slot_id) {
        const int32_t holder = next[slot_id];
        // Only slots still holding what they held: a slot already rewritten is a lost expert's.
        if (holder < 0 || holder != before[slot_id] || copies[static_cast<size_t>(holder)] < 2) {
          continue;
        }
        if (chosen == next.size()) {
          chosen = slot_id;
          continue;
        }
        const int holder_copies = copies[static_cast<size_t>(holder)];
        const int chosen_copies = copies[static_cast<size_t>(next[chosen])];
        if (holder_copies > chosen_copies ||
            (holder_copies == chosen_copies &&
             received[rank_of(slot_id)] < received[rank_of(chosen)])) {
          chosen = slot_id;
        }
      }
    }
    TIDAL_CHECK(chosen < next.size(), "no slot left for expert ", logical_id);
    if (next[chosen] >= 0) --copies[static_cast<size_t>(next[chosen])];
    next[chosen] = logical_id;
    ++copies[static_cast<size_t>(logical_id)];
    ++received[rank_of(chosen)];
  }

  LayerRecovery layer{.next = Placement(num_logical, num_ranks, slots_per_rank, next), .loads = {}};
  for (size_t slot_id = 0; slot_id < next.size(); ++slot_id) {
    if (next[slot_id] < 0 || next[slot_id] == before[slot_id]) continue;
    layer.loads.push_back({.logical_id = next[slot_id],
                           .rank_idx = static_cast<int>(rank_of(slot_id)),
                           .slot_idx = static_cast<int>(slot_id % slots_per_rank)});
  }
  return layer;
}

}  // namespace

Result<RecoveryPlan> plan_recovery(const RecoveryInput& input) {
  TIDAL_CHECK(input.num_logical > 0 && input.slots_per_rank > 0, "recovery needs E > 0 and S > 0");
  RecoveryPlan plan;
  for (const std::vector<std::vector<int32_t>>& held : input.held) {
    const int num_ranks = static_cast<int>(held.size());
    if (Status shape = check_shape(input.num_logical, num_ranks, input.slots_per_rank);
        !shape.is_ok()) {
      return Status::invalid_argument(cat("the ", num_ranks, " surviving ranks cannot hold all ",
                                          input.num_logical, " experts: ", shape.message()));
    }
    plan.layers.push_back(plan_layer(input.num_logical, input.slots_per_rank, held));
    plan.num_loads += static_cast<int>(plan.layers.back().loads.size());
  }
  return plan;
}

}  // namespace tidal::eplb
