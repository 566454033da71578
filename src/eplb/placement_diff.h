// The expert weight copies that turn one placement into another, in a safe in-place order.
#pragma once

#include <cstdint>
#include <vector>

#include "eplb/placement.h"

namespace tidal::eplb {

// One copy of one expert's weights into one slot. Source coordinates are the old placement's
// (old rank numbering, which includes ranks being removed: they still hold their weights during the
// commit); destination coordinates are the new placement's.
struct ExpertMove {
  int32_t logical_id = -1;
  int dst_rank_idx = -1;  // new rank
  int dst_slot_idx = -1;  // local slot on dst_rank_idx
  int src_rank_idx = -1;  // old rank
  int src_slot_idx = -1;  // local slot on src_rank_idx
  bool is_local = false;  // the source is on the old rank that dst_rank_idx continues
  // The source slot is itself the destination of another move. An executor that runs a layer's
  // moves all at once (one NCCL group) must read such sources into staging first.
  bool src_overwritten = false;
  // Read into staging before any move writes; set on one move per cycle (A <-> B), where no order
  // of in-place copies works.
  bool staged = false;
};

// Execution contract, for a sequential executor: (1) copy the source of every `staged` move into a
// staging buffer; (2) run `moves` in order, a staged one writing from staging. In that order no
// move reads a slot that an earlier move has already written, so everything else is copied in
// place from the old placement's contents. Fresh ranks have no old contents: every slot of theirs
// is a move (its source also says where a checkpoint loader could look instead).
struct MovePlan {
  std::vector<ExpertMove> moves;
  int num_local = 0;   // copies within one device
  int num_remote = 0;  // copies between ranks
  int num_staged = 0;
  std::vector<int> num_sent_by_old_rank;      // [old R]: remote copies each old rank sends
  std::vector<int> num_received_by_new_rank;  // [new R]: copies each new rank receives
};

// A move for every new (rank, slot) whose expert differs from what the old rank it continues held
// there (every filled slot of a fresh rank). Sources: on the same rank when the old rank holds the
// expert anywhere (a local copy), else on the holder that has sent least so far (ties: a source
// slot that is not overwritten, then the lowest rank and slot); experts with the fewest holders
// choose first. Throws tidal::Error for placements of different E or S, or a bad rank map.
MovePlan plan_moves(const Placement& old_placement, const Placement& new_placement,
                    const RankMap& rank_map);

}  // namespace tidal::eplb
