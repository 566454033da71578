// Qwen3 self-attention: q/k/v projections, per-head q/k RMSNorm, RoPE, paged GQA attention, o_proj.
#pragma once

#include <optional>
#include <string>

#include "backend/workspace.h"
#include "model/forward_batch.h"
#include "model/loader/model_config.h"
#include "model/weight_store.h"

namespace tidal {

struct AttentionWeights {
  Tensor q_proj, k_proj, v_proj, o_proj;
  Tensor q_norm, k_norm;
  std::optional<Tensor> q_bias, k_bias, v_bias;

  static AttentionWeights load(WeightStore& store, const ModelConfig& config,
                               const std::string& prefix);
};

// Returns the attention output [tokens, hidden], taken from the workspace.
Tensor attention_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                         const AttentionWeights& weights, const Tensor& x,
                         const ForwardBatch& batch, const KvCacheLayer& cache);

}  // namespace tidal
