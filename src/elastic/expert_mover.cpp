// move_expert_weights: the staging pass, then the shared-order walk of sends and receives.
#include "elastic/expert_mover.h"

#include <vector>

namespace tidal {

MoveStats move_expert_weights(Communicator& group, Backend& backend, const eplb::MovePlan& plan,
                              std::span<const SlotBuffer> buffers) {
  const int me = group.rank();
  size_t expert_bytes = 0;
  for (const SlotBuffer& buffer : buffers) expert_bytes += buffer.slot_bytes;
  auto slot_of = [](const SlotBuffer& buffer, int slot) {
    return buffer.base + static_cast<size_t>(slot) * buffer.slot_bytes;
  };

  // (1) Staging: a copy of every staged move's source this rank holds, before anything is written.
  std::vector<size_t> staged_at(plan.moves.size(), 0);
  size_t staged_bytes = 0;
  for (size_t m = 0; m < plan.moves.size(); ++m) {
    const eplb::ExpertMove& move = plan.moves[m];
    if (!move.staged || move.src_rank_idx != me) continue;
    staged_at[m] = staged_bytes;
    staged_bytes += expert_bytes;
  }
  const DeviceBuffer staging_memory =
      staged_bytes == 0 ? DeviceBuffer() : backend.allocate(staged_bytes);
  auto* staging = static_cast<std::byte*>(staging_memory.data());
  for (size_t m = 0; m < plan.moves.size(); ++m) {
    const eplb::ExpertMove& move = plan.moves[m];
    if (!move.staged || move.src_rank_idx != me) continue;
    size_t offset = staged_at[m];
    for (const SlotBuffer& buffer : buffers) {
      backend.copy_on_device(staging + offset, slot_of(buffer, move.src_slot_idx),
                             buffer.slot_bytes);
      offset += buffer.slot_bytes;
    }
  }

  // (2) The moves in list order; each rank does its part of each.
  MoveStats stats;
  for (size_t m = 0; m < plan.moves.size(); ++m) {
    const eplb::ExpertMove& move = plan.moves[m];
    const bool source = move.src_rank_idx == me;
    const bool destination = move.dst_rank_idx == me;
    if (!source && !destination) continue;
    size_t offset = staged_at[m];
    for (const SlotBuffer& buffer : buffers) {
      const std::byte* from =
          move.staged && source ? staging + offset : slot_of(buffer, move.src_slot_idx);
      std::byte* to = slot_of(buffer, move.dst_slot_idx);
      if (source && destination) {
        if (from != to) backend.copy_on_device(to, from, buffer.slot_bytes);
      } else if (source) {
        group.send(move.dst_rank_idx, from, buffer.slot_bytes);
      } else {
        group.recv(move.src_rank_idx, to, buffer.slot_bytes);
      }
      offset += buffer.slot_bytes;
    }
    const auto bytes = static_cast<int64_t>(expert_bytes);
    if (source && destination) {
      stats.bytes_copied += bytes;
    } else if (source) {
      stats.bytes_sent += bytes;
    } else {
      stats.bytes_received += bytes;
    }
  }
  backend.synchronize();
  return stats;
}

}  // namespace tidal
