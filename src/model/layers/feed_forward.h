// The feed-forward blocks of a decoder layer: the sparse MoE block and the dense SwiGLU MLP.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backend/workspace.h"
#include "model/layers/expert_executor.h"
#include "model/model_config.h"
#include "model/weight_store.h"

namespace tidal {

// The checkpoint names of an expert's three projections (Mixtral: w1, w3, w2).
struct ExpertProjectionNames {
  std::string gate = "gate_proj";
  std::string up = "up_proj";
  std::string down = "down_proj";
};

// Where a family keeps its MoE block's weights, relative to the block's prefix.
struct MoeWeightNames {
  ExpertProjectionNames experts;
  std::string shared_expert = "shared_expert.";  // DeepSeek: "shared_experts."
  std::string shared_expert_gate = "shared_expert_gate.weight";
  std::string selection_bias = "gate.e_score_correction_bias";
};

struct DenseMlpWeights {
  Tensor gate_up;  // [2 * intermediate, hidden]: gate rows then up rows
  Tensor down;     // [hidden, intermediate]

  // `intermediate` the MLP's width (the config's intermediate_size for a dense layer).
  static DenseMlpWeights load(WeightStore& store, const ModelConfig& config,
                              const std::string& prefix, int64_t intermediate);
};

struct MoeWeights {
  Tensor router;  // [num_experts, hidden]
  ExpertSlots experts;
  // Every token's shared expert (config.shared_expert_intermediate_size > 0), on every rank.
  std::optional<DenseMlpWeights> shared_expert;
  // [1, hidden]: the shared expert's output is scaled by sigmoid(gate . x) (Qwen2-MoE).
  std::optional<Tensor> shared_expert_gate;
  // [num_experts] F32: added to the router's scores to choose experts, not to weigh them
  // (config.router.selection_bias, DeepSeek-V3).
  std::optional<Tensor> selection_bias;
  MoeWeightNames names;
  // TEST-ONLY: added to the router logits (TIDAL_TEST_ROUTER_BIAS, see feed_forward.cpp); empty
  // in serving.
  Tensor router_test_bias = {};

  // Loads this rank's slots (slot s holds logical expert slot_experts[s]) from either the
  // per-expert layout (experts.J.gate_proj/up_proj/down_proj) or the fused one
  // (experts.gate_up_proj, experts.down_proj).
  static MoeWeights load(WeightStore& store, const ModelConfig& config, const std::string& prefix,
                         const MoeWeightNames& names, const std::vector<int32_t>& slot_experts);
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
