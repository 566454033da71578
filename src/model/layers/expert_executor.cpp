// LocalExpertExecutor: logical expert ids are slot ids.
#include "model/layers/expert_executor.h"

namespace tidal {

Tensor LocalExpertExecutor::run(Backend& backend, Workspace& workspace, int64_t /*moe_layer*/,
                                const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights,
                                const ExpertSlots& slots, const Tensor& /*token_ids*/) {
  const Tensor out = workspace.take(backend.activation_dtype(), {x.dim(0), x.dim(1)});
  backend.moe_experts(x, topk_ids, topk_weights, slots, out);
  return out;
}

}  // namespace tidal
