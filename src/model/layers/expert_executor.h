// ExpertExecutor: how a MoE layer's routed tokens reach their experts. Locally when one rank holds
// every expert; across ranks (dispatch, compute, combine) under expert parallelism.
#pragma once

#include <cstdint>

#include "backend/workspace.h"

namespace tidal {

class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  // x [tokens, hidden]; topk_ids [tokens, k] logical experts (I32); topk_weights [tokens, k] F32;
  // `slots` this rank's expert weights; token_ids [tokens] the step's tokens (I32, -1 for
  // padding, whose rows need no experts and are no load). Returns out [tokens, hidden] from the
  // workspace. Every rank of the group calls it for every MoE layer of every step.
  virtual Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
                     const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots,
                     const Tensor& token_ids) = 0;
  // Whether run() may be recorded into a CUDA graph: it neither synchronises with the host nor
  // sizes anything by the step's routing.
  virtual bool capturable() const { return false; }
};

// One rank holds every logical expert, expert e in slot e.
class LocalExpertExecutor final : public ExpertExecutor {
 public:
  Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
             const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots,
             const Tensor& token_ids) override;
  bool capturable() const override { return true; }
};

}  // namespace tidal
