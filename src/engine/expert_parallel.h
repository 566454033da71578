// ExpertParallelExecutor: a MoE layer across ranks. Each routed (token, choice) goes to a rank
// holding a replica of its expert (all-to-all), runs there, and comes back to be combined in
// top-k order, so every result is bit-identical to running all experts on one rank.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "eplb/load_window.h"
#include "eplb/replica_tables.h"
#include "model/layers/expert_executor.h"

namespace tidal {

// The dispatch plan is made on the device (Backend::route_experts) from device copies of the
// placement tables, and the all-to-alls move fixed blocks of tokens x k rows per rank, so a step
// never waits for the host and can be captured in a graph. Every rank of the group must call
// run() with the same number of tokens (the engine pads each step to the group's agreed count):
// the blocks' size is what both sides of an exchange assume.
class ExpertParallelExecutor final : public ExpertExecutor {
 public:
  // `tables` holds one PlacementTables per MoE layer (or a single one that every layer shares).
  // Whoever rewrites them in place calls upload_tables() before the next step.
  ExpertParallelExecutor(Communicator& group, const std::vector<eplb::PlacementTables>& tables,
                         eplb::TableShape shape);

  Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
             const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots,
             const Tensor& token_ids) override;
  bool capturable() const override { return true; }

  // The workspace bytes one run() of `tokens` tokens takes for each rank of the group (the
  // exchange buffers hold a block of tokens x k rows per rank), per MoE layer: what a step's
  // workspace grows by when the group gains a rank.
  static size_t workspace_bytes_per_rank(int64_t tokens, int64_t k, int64_t hidden, DType act);

  void set_group(Communicator& group) { group_ = &group; }
  // Counts each routed (token, choice) of this rank's real tokens (padding is no load) per MoE
  // layer and logical expert, in device counters that the routing kernel itself increments, so
  // steps stay capturable; collect_load() moves them into `window`. nullptr: off. Set it before
  // the warm-up that captures the graphs (they count only if it was set then).
  void set_load_window(eplb::LoadWindow* window) { load_window_ = window; }
  // After a step: adds the counters (every step's since the last call) to the window's pending
  // step and zeroes them. One small copy to the host: the rank worker calls it every few steps
  // and before each plan, not every step.
  void collect_load(Backend& backend);
  // Zeroes the counters (a warm-up's tokens are no load).
  void discard_load(Backend& backend);
  // Copies every layer's tables to the device (their addresses never change, so captured graphs
  // read the new ones). Between steps.
  void upload_tables(Backend& backend);

 private:
  ExpertRoute route_of(const Backend& backend, int64_t moe_layer, int64_t capacity) const;
  // At least `rows` weights of 1 for the received rows (each is one choice, weighted on return).
  const Tensor& ones(Backend& backend, int64_t rows);

  Communicator* group_;
  const std::vector<eplb::PlacementTables>* tables_;
  eplb::LoadWindow* load_window_ = nullptr;
  eplb::TableShape shape_;
  DeviceBuffer device_tables_;  // per table: replica_count [E], then replica_slots [E, width]
  DeviceBuffer ones_buffer_;
  Tensor ones_;
  Tensor load_counts_;  // [window layers, E] I32 on the device, while a window is set
  DeviceBuffer load_counts_buffer_;
};

}  // namespace tidal
