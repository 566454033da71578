// Test helpers for eplb: a simulated weight-move executor and placement properties.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "eplb/placement.h"
#include "eplb/placement_diff.h"

namespace tidal::eplb::testing_util {

// The message of the tidal::Error that fn throws, or "(no error)".
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

// Runs `plan` on simulated device buffers (one expert id per slot) by its execution contract:
// stage the reads of staged moves, then copy in list order, reading the *current* buffers. A
// surviving new rank reuses its old rank's buffer; a fresh one starts empty (-1); removed ranks
// keep theirs until the end. Returns the new ranks' buffers, flattened like physical_to_logical.
inline std::vector<int32_t> apply_moves(const Placement& old_placement, int new_num_ranks,
                                        const RankMap& rank_map, const MovePlan& plan) {
  const int slots_per_rank = old_placement.slots_per_rank();
  std::vector<std::vector<int32_t>> old_buffers(old_placement.num_ranks());
  for (int rank_idx = 0; rank_idx < old_placement.num_ranks(); ++rank_idx) {
    old_buffers[rank_idx] = old_placement.local_slot_to_logical(rank_idx);
  }
  std::vector<std::vector<int32_t>> fresh_buffers(new_num_ranks,
                                                  std::vector<int32_t>(slots_per_rank, -1));
  auto new_buffer = [&](int new_rank_idx) -> std::vector<int32_t>& {
    const int old_rank_idx = rank_map[new_rank_idx];
    return old_rank_idx >= 0 ? old_buffers[old_rank_idx] : fresh_buffers[new_rank_idx];
  };
  // src_overwritten must be exact: it is what a concurrent executor stages by.
  std::vector<std::vector<bool>> written(old_placement.num_ranks(),
                                         std::vector<bool>(slots_per_rank, false));
  for (const ExpertMove& move : plan.moves) {
    const int old_rank_idx = rank_map[move.dst_rank_idx];
    if (old_rank_idx >= 0) written[old_rank_idx][move.dst_slot_idx] = true;
  }
  for (const ExpertMove& move : plan.moves) {
    EXPECT_EQ(move.src_overwritten, written[move.src_rank_idx][move.src_slot_idx]);
  }
  std::vector<int32_t> staging(plan.moves.size(), -1);
  for (size_t move_idx = 0; move_idx < plan.moves.size(); ++move_idx) {
    const ExpertMove& move = plan.moves[move_idx];
    if (move.staged) staging[move_idx] = old_buffers[move.src_rank_idx][move.src_slot_idx];
  }
  for (size_t move_idx = 0; move_idx < plan.moves.size(); ++move_idx) {
    const ExpertMove& move = plan.moves[move_idx];
    const int32_t value =
        move.staged ? staging[move_idx] : old_buffers[move.src_rank_idx][move.src_slot_idx];
    // The executor copies weights, not ids: a source must hold the expert when it is read.
    EXPECT_EQ(value, move.logical_id) << "move " << move_idx << " read a clobbered source";
    new_buffer(move.dst_rank_idx)[move.dst_slot_idx] = value;
  }
  std::vector<int32_t> layout;
  for (int rank_idx = 0; rank_idx < new_num_ranks; ++rank_idx) {
    const std::vector<int32_t>& buffer = new_buffer(rank_idx);
    layout.insert(layout.end(), buffer.begin(), buffer.end());
  }
  return layout;
}

// Whether some rank holds one logical expert in two slots.
inline bool has_duplicate_on_a_rank(const Placement& placement) {
  for (int rank_idx = 0; rank_idx < placement.num_ranks(); ++rank_idx) {
    std::vector<int32_t> slots = placement.local_slot_to_logical(rank_idx);
    std::sort(slots.begin(), slots.end());
    for (size_t slot_idx = 1; slot_idx < slots.size(); ++slot_idx) {
      if (slots[slot_idx] >= 0 && slots[slot_idx] == slots[slot_idx - 1]) return true;
    }
  }
  return false;
}

// Slots that hold a different expert than the old rank they continue held there.
inline int num_changed_slots(const Placement& old_placement, const Placement& new_placement,
                             const RankMap& rank_map) {
  int num_changed = 0;
  for (int rank_idx = 0; rank_idx < new_placement.num_ranks(); ++rank_idx) {
    for (int slot_idx = 0; slot_idx < new_placement.slots_per_rank(); ++slot_idx) {
      const int old_rank_idx = rank_map[rank_idx];
      const int32_t old_id =
          old_rank_idx < 0 ? -1 : old_placement.logical_at(old_rank_idx, slot_idx);
      if (new_placement.logical_at(rank_idx, slot_idx) != old_id) ++num_changed;
    }
  }
  return num_changed;
}

}  // namespace tidal::eplb::testing_util
