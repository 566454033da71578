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

class ExpertParallelExecutor final : public ExpertExecutor {
 public:
  // `tables` holds one PlacementTables per MoE layer (or a single one that every layer shares);
  // they are read at every step (a placement change rewrites them in place between steps).
  // Receive buffers have a fixed capacity of size() x max_tokens_per_rank x k rows, so the
  // workspace a warm-up sizes covers every later step.
  ExpertParallelExecutor(Communicator& group, const std::vector<eplb::PlacementTables>& tables,
                         eplb::TableShape shape, int64_t max_tokens_per_rank);

  Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
             const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots) override;

  void set_group(Communicator& group) { group_ = &group; }
  // Counts each routed (token, choice) of this rank's tokens into `window` (nullptr: off). The
  // ids are already on the host here, so counting costs no device synchronisation.
  void set_load_window(eplb::LoadWindow* window) { load_window_ = window; }

 private:
  Communicator* group_;
  const std::vector<eplb::PlacementTables>* tables_;
  eplb::LoadWindow* load_window_ = nullptr;
  eplb::TableShape shape_;
  int64_t max_tokens_per_rank_;
};

}  // namespace tidal
