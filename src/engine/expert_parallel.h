// ExpertParallelExecutor: a MoE layer across ranks. Each routed (token, choice) goes to a rank
// holding a replica of its expert (all-to-all), runs there, and comes back to be combined in
// top-k order, so every result is bit-identical to running all experts on one rank.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "eplb/replica_tables.h"
#include "model/layers/expert_executor.h"

namespace tidal {

class ExpertParallelExecutor final : public ExpertExecutor {
 public:
  // `tables` are read at every step (a placement change rewrites them in place between steps).
  // Receive buffers have a fixed capacity of size() x max_tokens_per_rank x k rows, so the
  // workspace a warm-up sizes covers every later step.
  ExpertParallelExecutor(Communicator& group, const eplb::PlacementTables& tables,
                         eplb::TableShape shape, int64_t max_tokens_per_rank);

  Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
             const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots) override;

  void set_group(Communicator& group) { group_ = &group; }

 private:
  Communicator* group_;
  const eplb::PlacementTables* tables_;
  eplb::TableShape shape_;
  int64_t max_tokens_per_rank_;
};

}  // namespace tidal
