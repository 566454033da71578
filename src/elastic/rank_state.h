// RankState: everything one rank process holds once it has joined a group, and the operations on
// it that keep addresses fixed (placement rewrites in place, the warm-up that sizes the
// workspace). The loop that drives it lives in rank_worker.cpp; transitions in rank_transition.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "comm/kv_store.h"
#include "elastic/expert_mover.h"
#include "elastic/rank_protocol.h"
#include "engine/engine.h"
#include "engine/expert_parallel.h"
#include "eplb/load_window.h"
#include "eplb/placement.h"
#include "eplb/replica_tables.h"
#include "model/causal_lm.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {

struct RankState {
  rank_protocol::RankConfig config;  // rank, num_ranks and epoch follow every transition
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<KvStoreClient> store;
  std::unique_ptr<Communicator> group;
  int num_experts = 0;
  eplb::TableShape shape;  // sized for config.max_num_ranks, so tables never reallocate
  // One placement and one set of tables per MoE layer. The executor reads `tables` by address, so
  // the vector is sized once at join and later only its elements are rewritten.
  std::vector<eplb::Placement> placements;
  std::vector<eplb::PlacementTables> tables;
  std::unique_ptr<ExpertParallelExecutor> executor;
  std::unique_ptr<CausalLm> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<eplb::LoadWindow> load_window;  // only with enable_eplb
  int64_t eplb_steps = 0;  // steps since the last rebalance or transition, the same on every rank
  // Layers of a planned rebalance whose weights have not moved yet (moved a batch per step, in
  // order; the same list on every rank). A transition drops them: they were planned for the old
  // rank count.
  std::deque<std::pair<size_t, eplb::Placement>> eplb_pending;
  // [MoE layer]: its slots are being rewritten (a move of load balancing or of a transition has
  // begun and its placement is not yet the tables'), so what they hold is unknown if it breaks off.
  std::vector<bool> layer_in_motion;
  // The newest epoch the front reported lost (see RankHeartbeat); NCCL waits of that epoch or an
  // older one give up at once. Null for a rank without a heartbeat (tests).
  const std::atomic<uint64_t>* lost_epoch = nullptr;
};

// [MoE layer][local slot]: the logical expert each slot holds, -1 for a layer in motion.
std::vector<std::vector<int32_t>> held_experts(const RankState& rank);

// Loads this rank's share of the model, allocates its KV cache and forms the epoch's
// communicator (collective with the epoch's other ranks). A rank of the first epoch then warms up
// (collective too); a joining rank leaves that to the commit of its transition.
std::unique_ptr<RankState> join_rank(const rank_protocol::RankConfig& config,
                                     const std::atomic<uint64_t>* lost_epoch = nullptr);

// The data-plane communicator of one epoch: NCCL on a CUDA backend, Gloo otherwise. Collective
// over the epoch's ranks; `store` is used only while it forms.
std::unique_ptr<Communicator> make_epoch_group(Backend& backend, KvStoreClient& store, int rank,
                                               int size, uint64_t epoch,
                                               std::chrono::milliseconds timeout,
                                               const std::atomic<uint64_t>* lost_epoch);

// warm_and_capture: grows the workspace with the worst-case batch under the current placement and
// group, locks it, then (on a GPU) captures the decode graphs of every bucket. Collective. Load
// balancing does not count the warm-up's tokens as load. Returns the seconds it took.
double warm_and_capture(RankState& rank);

// Rewrites one MoE layer's tables in place for `next` (same sizes, same addresses), and copies the
// tables to the device unless `upload` is false (a caller rewriting many layers uploads once).
void set_layer_placement(RankState& rank, size_t moe_layer, const eplb::Placement& next,
                         bool upload = true);

// This rank's weight buffers of one MoE layer, as the expert mover wants them.
std::vector<SlotBuffer> layer_slot_buffers(const RankState& rank, size_t moe_layer);

}  // namespace tidal
