// Grouped-query self-attention over the paged KV cache.
#include "model/layers/attention.h"

#include <cmath>

namespace tidal {

AttentionWeights AttentionWeights::load(WeightStore& store, const ModelConfig& config,
                                        const std::string& prefix) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  AttentionWeights weights{
      .q_proj = store.get(prefix + "q_proj.weight", {q_width, hidden}),
      .k_proj = store.get(prefix + "k_proj.weight", {kv_width, hidden}),
      .v_proj = store.get(prefix + "v_proj.weight", {kv_width, hidden}),
      .o_proj = store.get(prefix + "o_proj.weight", {hidden, q_width}),
      .q_norm = std::nullopt,
      .k_norm = std::nullopt,
      .q_bias = std::nullopt,
      .k_bias = std::nullopt,
      .v_bias = std::nullopt,
      .o_bias = std::nullopt,
  };
  if (config.qk_norm) {
    weights.q_norm = store.get(prefix + "q_norm.weight", {config.head_dim});
    weights.k_norm = store.get(prefix + "k_norm.weight", {config.head_dim});
  }
  if (config.attention_bias) {
    weights.q_bias = store.get(prefix + "q_proj.bias", {q_width});
    weights.k_bias = store.get(prefix + "k_proj.bias", {kv_width});
    weights.v_bias = store.get(prefix + "v_proj.bias", {kv_width});
  }
  if (config.attention_output_bias) weights.o_bias = store.get(prefix + "o_proj.bias", {hidden});
  return weights;
}

Tensor attention_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                         const AttentionWeights& weights, const Tensor& x,
                         const ForwardBatch& batch, const KvCacheLayer& cache) {
  const int64_t tokens = x.dim(0);
  const int64_t heads = config.num_heads;
  const int64_t kv_heads = config.num_kv_heads;
  const int64_t head_dim = config.head_dim;
  const DType act = backend.activation_dtype();

  const Tensor q = workspace.take(act, {tokens, heads, head_dim});
  const Tensor k = workspace.take(act, {tokens, kv_heads, head_dim});
  const Tensor v = workspace.take(act, {tokens, kv_heads, head_dim});
  backend.linear(x, weights.q_proj, weights.q_bias ? &*weights.q_bias : nullptr,
                 q.reshaped({tokens, heads * head_dim}));
  backend.linear(x, weights.k_proj, weights.k_bias ? &*weights.k_bias : nullptr,
                 k.reshaped({tokens, kv_heads * head_dim}));
  backend.linear(x, weights.v_proj, weights.v_bias ? &*weights.v_bias : nullptr,
                 v.reshaped({tokens, kv_heads * head_dim}));
  if (weights.q_norm) {
    // Qwen3 normalises each head of q and k before the rotary embedding; one fused op does both
    // norms, the rotation and the KV store (a decode layer is latency-bound by its launches).
    backend.qk_norm_rope_store(q, k, v, *weights.q_norm, *weights.k_norm, config.rms_norm_eps,
                               batch.positions, config.rope_theta, batch.slot_mapping, cache);
  } else {
    backend.rope(q, k, batch.positions, config.rope_theta);
    backend.store_kv(k, v, batch.slot_mapping, cache);
  }

  const Tensor context = workspace.take(act, {tokens, heads, head_dim});
  const float scale = config.attention_scale > 0.0f
                          ? config.attention_scale
                          : 1.0f / std::sqrt(static_cast<float>(head_dim));
  backend.paged_attention(q, cache, batch.attention, scale, context);
  const Tensor out = workspace.take(act, {tokens, config.hidden_size});
  backend.linear(context.reshaped({tokens, heads * head_dim}), weights.o_proj,
                 weights.o_bias ? &*weights.o_bias : nullptr, out);
  return out;
}

}  // namespace tidal
