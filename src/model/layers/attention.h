// Grouped-query self-attention (Qwen3, Qwen2-MoE, Mixtral): q/k/v projections (with biases where
// the family has them), per-head q/k RMSNorm (Qwen3), RoPE, paged attention, o_proj.
#pragma once

#include <optional>
#include <string>

#include "backend/workspace.h"
#include "model/forward_batch.h"
#include "model/model_config.h"
#include "model/weight_store.h"

namespace tidal {

struct AttentionWeights {
  Tensor q_proj, k_proj, v_proj, o_proj;
  std::optional<Tensor> q_norm, k_norm;          // config.qk_norm
  std::optional<Tensor> q_bias, k_bias, v_bias;  // config.attention_bias
  std::optional<Tensor> o_bias;                  // config.attention_output_bias

  static AttentionWeights load(WeightStore& store, const ModelConfig& config,
                               const std::string& prefix);
};

// Returns the attention output [tokens, hidden], taken from the workspace.
Tensor attention_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                         const AttentionWeights& weights, const Tensor& x,
                         const ForwardBatch& batch, const KvCacheLayer& cache);

}  // namespace tidal
