// Weight moves between two placements: source choice, then an in-place order with staged cycles.
#include "eplb/placement_diff.h"

#include <algorithm>
#include <queue>

#include "common/error.h"

namespace tidal::eplb {
namespace {

// Puts the moves in an order where a move that reads slot X runs before the move that writes X.
// Each move reads one slot, so these constraints form chains that end in cycles; staging one move
// per cycle (its read happens before any write) breaks it.
void order_in_place(const RankMap& rank_map, int num_old_slots, int slots_per_rank,
                    MovePlan& plan) {
  const int num_moves = static_cast<int>(plan.moves.size());
  std::vector<int> writer_of_old_slot(num_old_slots, -1);
  for (int move_idx = 0; move_idx < num_moves; ++move_idx) {
    const ExpertMove& move = plan.moves[move_idx];
    const int old_rank_idx = rank_map[move.dst_rank_idx];
    if (old_rank_idx >= 0) {
      writer_of_old_slot[old_rank_idx * slots_per_rank + move.dst_slot_idx] = move_idx;
    }
  }
  std::vector<int> read_by(num_moves, -1);     // the move that must wait for this one
  std::vector<int> num_readers(num_moves, 0);  // moves that must run before this one
  for (int move_idx = 0; move_idx < num_moves; ++move_idx) {
    const ExpertMove& move = plan.moves[move_idx];
    const int writer = writer_of_old_slot[move.src_rank_idx * slots_per_rank + move.src_slot_idx];
    if (writer < 0) continue;
    read_by[move_idx] = writer;
    ++num_readers[writer];
  }
  std::priority_queue<int, std::vector<int>, std::greater<>> ready;
  std::vector<bool> done(num_moves, false);
  for (int move_idx = 0; move_idx < num_moves; ++move_idx) {
    if (num_readers[move_idx] == 0) ready.push(move_idx);
  }
  auto release_writer = [&](int move_idx) {
    const int writer = read_by[move_idx];
    if (writer >= 0 && --num_readers[writer] == 0) ready.push(writer);
  };
  std::vector<ExpertMove> ordered;
  ordered.reserve(num_moves);
  int next_unstaged = 0;
  while (static_cast<int>(ordered.size()) < num_moves) {
    if (ready.empty()) {
      // Everything left waits on something left: only cycles remain. Stage the first one's read.
      while (done[next_unstaged] || plan.moves[next_unstaged].staged) ++next_unstaged;
      plan.moves[next_unstaged].staged = true;
      ++plan.num_staged;
      release_writer(next_unstaged);
      continue;
    }
    const int move_idx = ready.top();
    ready.pop();
    done[move_idx] = true;
    ordered.push_back(plan.moves[move_idx]);
    if (!plan.moves[move_idx].staged) release_writer(move_idx);
  }
  plan.moves = std::move(ordered);
}

}  // namespace

MovePlan plan_moves(const Placement& old_placement, const Placement& new_placement,
                    const RankMap& rank_map) {
  TIDAL_CHECK(old_placement.num_logical() == new_placement.num_logical() &&
                  old_placement.slots_per_rank() == new_placement.slots_per_rank(),
              "moves need placements of the same experts and slots; old has E=",
              old_placement.num_logical(), " S=", old_placement.slots_per_rank(),
              ", new has E=", new_placement.num_logical(), " S=", new_placement.slots_per_rank());
  const int old_num_ranks = old_placement.num_ranks();
  const int new_num_ranks = new_placement.num_ranks();
  const int slots_per_rank = new_placement.slots_per_rank();
  check_rank_map(rank_map, old_num_ranks, new_num_ranks);

  std::vector<int> old_to_new(old_num_ranks, -1);
  for (int new_rank_idx = 0; new_rank_idx < new_num_ranks; ++new_rank_idx) {
    if (rank_map[new_rank_idx] >= 0) old_to_new[rank_map[new_rank_idx]] = new_rank_idx;
  }
  // The old content of the slot a new (rank, slot) reuses; -1 on fresh ranks.
  auto old_content = [&](int new_rank_idx, int slot_idx) {
    const int old_rank_idx = rank_map[new_rank_idx];
    return old_rank_idx < 0 ? int32_t{-1} : old_placement.logical_at(old_rank_idx, slot_idx);
  };
  auto needs_write = [&](int new_rank_idx, int slot_idx) {
    const int32_t logical_id = new_placement.logical_at(new_rank_idx, slot_idx);
    return logical_id >= 0 && logical_id != old_content(new_rank_idx, slot_idx);
  };
  auto overwritten = [&](int old_slot_id) {
    const int new_rank_idx = old_to_new[old_slot_id / slots_per_rank];
    return new_rank_idx >= 0 && needs_write(new_rank_idx, old_slot_id % slots_per_rank);
  };

  MovePlan plan;
  plan.num_sent_by_old_rank.assign(old_num_ranks, 0);
  plan.num_received_by_new_rank.assign(new_num_ranks, 0);
  for (int new_rank_idx = 0; new_rank_idx < new_num_ranks; ++new_rank_idx) {
    for (int slot_idx = 0; slot_idx < slots_per_rank; ++slot_idx) {
      if (!needs_write(new_rank_idx, slot_idx)) continue;
      plan.moves.push_back({.logical_id = new_placement.logical_at(new_rank_idx, slot_idx),
                            .dst_rank_idx = new_rank_idx,
                            .dst_slot_idx = slot_idx});
    }
  }

  // Sources: experts with the fewest holders choose first, so the spread is not spent on moves
  // that had alternatives.
  std::vector<size_t> by_choice(plan.moves.size());
  for (size_t move_idx = 0; move_idx < by_choice.size(); ++move_idx) by_choice[move_idx] = move_idx;
  std::stable_sort(by_choice.begin(), by_choice.end(), [&](size_t lhs, size_t rhs) {
    return old_placement.num_replicas(plan.moves[lhs].logical_id) <
           old_placement.num_replicas(plan.moves[rhs].logical_id);
  });
  for (const size_t move_idx : by_choice) {
    ExpertMove& move = plan.moves[move_idx];
    const int local_rank_idx = rank_map[move.dst_rank_idx];
    int best_slot_id = -1;
    auto better = [&](int slot_id) {
      if (best_slot_id < 0) return true;
      const int rank_idx = slot_id / slots_per_rank;
      const int best_rank_idx = best_slot_id / slots_per_rank;
      const bool local = rank_idx == local_rank_idx;
      const bool best_local = best_rank_idx == local_rank_idx;
      if (local != best_local) return local;
      if (!local) {
        const int sent = plan.num_sent_by_old_rank[rank_idx];
        const int best_sent = plan.num_sent_by_old_rank[best_rank_idx];
        if (sent != best_sent) return sent < best_sent;
      }
      return !overwritten(slot_id) && overwritten(best_slot_id);
    };
    for (const int32_t slot_id : old_placement.replicas(move.logical_id)) {
      if (better(slot_id)) best_slot_id = slot_id;
    }
    move.src_rank_idx = best_slot_id / slots_per_rank;
    move.src_slot_idx = best_slot_id % slots_per_rank;
    move.is_local = move.src_rank_idx == local_rank_idx;
    move.src_overwritten = overwritten(best_slot_id);
    if (move.is_local) {
      ++plan.num_local;
    } else {
      ++plan.num_remote;
      ++plan.num_sent_by_old_rank[move.src_rank_idx];
    }
    ++plan.num_received_by_new_rank[move.dst_rank_idx];
  }

  order_in_place(rank_map, old_num_ranks * slots_per_rank, slots_per_rank, plan);
  return plan;
}

}  // namespace tidal::eplb
