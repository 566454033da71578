// Executes a MovePlan on one rank: expert weights copied peer to peer into existing slots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "eplb/placement_diff.h"

namespace tidal {

// One per-layer weight buffer of S slots, slot s at base + s * slot_bytes, in the memory of the
// rank's backend (host for CPU, device for CUDA). A layer has several (gate_up, down, and their
// block scales for FP8 weights: ExpertSlots::regions); every move copies the slot of each.
struct SlotBuffer {
  std::byte* base = nullptr;
  size_t slot_bytes = 0;
};

struct MoveStats {
  int64_t bytes_received = 0;  // from other ranks into this rank's slots
  int64_t bytes_sent = 0;
  int64_t bytes_copied = 0;  // local copies within this rank
};

// Every rank of `group` calls this with the same plan (old and new placement of the same ranks,
// identity rank map) and its own buffers. Follows the plan's staging contract: the sources of
// `staged` moves are read into staging first; then every rank walks the moves in list order, the
// source rank sending and the destination rank receiving (a local move is a device copy). Walking
// one shared order is what keeps the point-to-point pairs from deadlocking: the earliest unfinished
// move always has both its ranks waiting on it. Buffers keep their addresses. Local copies and
// staging go through `backend` (staging is allocated for the call, outside the workspace); sends
// and receives through `group`, which on a GPU is an NCCL communicator on the backend's stream,
// so every copy stays ordered on that stream. Returns once the moves are complete.
MoveStats move_expert_weights(Communicator& group, Backend& backend, const eplb::MovePlan& plan,
                              std::span<const SlotBuffer> buffers);

}  // namespace tidal
