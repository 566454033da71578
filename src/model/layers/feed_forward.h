// The feed-forward blocks of a decoder layer: the sparse MoE block and the dense SwiGLU MLP.
#pragma once

#include <string>
#include <vector>

#include "backend/workspace.h"
#include "model/layers/expert_executor.h"
#include "model/loader/model_config.h"
#include "model/weight_store.h"

namespace tidal {

struct DenseMlpWeights {
  Tensor gate_up;  // [2 * intermediate, hidden]: gate rows then up rows
  Tensor down;     // [hidden, intermediate]

  static DenseMlpWeights load(WeightStore& store, const ModelConfig& config,
                              const std::string& prefix);
};

struct MoeWeights {
  Tensor router;  // [num_experts, hidden]
  ExpertSlots experts;
  // TEST-ONLY: added to the router logits (TIDAL_TEST_ROUTER_BIAS, see feed_forward.cpp); empty
  // in serving.
  Tensor router_test_bias = {};

  // Loads this rank's slots (slot s holds logical expert slot_experts[s]) from either the
  // per-expert layout (experts.J.gate_proj/up_proj/down_proj) or the fused one
  // (experts.gate_up_proj, experts.down_proj).
  static MoeWeights load(WeightStore& store, const ModelConfig& config, const std::string& prefix,
                         const std::vector<int32_t>& slot_experts);
  // Reads logical expert `expert` from the checkpoint into slot `slot` of the existing buffers
  // (same addresses): the load above, for one slot, and the recovery of an expert that was lost.
  void load_expert(WeightStore& store, const ModelConfig& config, const std::string& prefix,
                   int64_t slot, int32_t expert) const;
};

Tensor dense_mlp_forward(Backend& backend, Workspace& workspace, const DenseMlpWeights& weights,
                         const Tensor& x);
Tensor moe_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                   const MoeWeights& weights, ExpertExecutor& executor, int64_t moe_layer,
                   const Tensor& x, const Tensor& token_ids);

}  // namespace tidal
