// Byte and FLOP counts of a step of a MoE model (grouped-query or latent attention), from the
// config's shapes.
#include "model/roofline.h"

#include "common/error.h"

namespace tidal {
namespace {

// Weight elements of one layer's latent attention: q (with or without LoRA), the latent and
// rotary key projection, kv_b_proj (absorbed, still read once), o_proj and the norms.
double latent_attention_elements(const ModelConfig& c) {
  const MlaConfig& m = c.mla;
  const double hidden = static_cast<double>(c.hidden_size);
  const double heads = static_cast<double>(c.num_heads);
  const double q_width = heads * static_cast<double>(m.qk_head_dim());
  const double q = m.q_lora_rank > 0 ? static_cast<double>(m.q_lora_rank) * (hidden + q_width + 1)
                                     : q_width * hidden;
  const double latent = static_cast<double>(m.kv_lora_rank);
  return q + (latent + static_cast<double>(m.qk_rope_head_dim)) * hidden + latent +
         heads * static_cast<double>(m.qk_nope_head_dim + m.v_head_dim) * latent +
         hidden * heads * static_cast<double>(m.v_head_dim);
}

// Weight elements of one layer's attention: q, k, v, o projections and the two head norms.
double attention_elements(const ModelConfig& c) {
  if (c.mla.enabled()) return latent_attention_elements(c);
  const double q_width = static_cast<double>(c.num_heads * c.head_dim);
  const double kv_width = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double hidden = static_cast<double>(c.hidden_size);
  const double norms = c.qk_norm ? 2 * static_cast<double>(c.head_dim) : 0.0;
  return 2 * q_width * hidden + 2 * kv_width * hidden + norms;
}

// The shared expert of a MoE layer (and its gate), which every token reads on every rank.
double shared_expert_elements(const ModelConfig& c) {
  const double hidden = static_cast<double>(c.hidden_size);
  return 3.0 * static_cast<double>(c.shared_expert_intermediate_size) * hidden +
         (c.shared_expert_gated ? hidden : 0.0);
}

double expert_elements(const ModelConfig& c) {
  return 3.0 * static_cast<double>(c.moe_intermediate_size) * static_cast<double>(c.hidden_size);
}

}  // namespace

StepBytes decode_step_bytes(const ModelConfig& config, int64_t num_seqs, int64_t context_len,
                            std::span<const int64_t> touched_experts, double weight_bytes,
                            double kv_bytes) {
  const double hidden = static_cast<double>(config.hidden_size);
  const auto seqs = static_cast<double>(num_seqs);
  StepBytes bytes;
  double dense = seqs * hidden;  // the embedding rows of this step's tokens
  size_t moe_layer = 0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    dense += 2 * hidden + attention_elements(config);
    if (config.is_moe_layer(layer)) {
      TIDAL_CHECK(moe_layer < touched_experts.size(), "touched experts given for ",
                  touched_experts.size(), " MoE layers, the model has more");
      dense += static_cast<double>(config.num_experts) * hidden  // the router
               + shared_expert_elements(config);
      bytes.expert_weights += static_cast<double>(touched_experts[moe_layer++]) *
                              expert_elements(config) * weight_bytes;
    } else {
      dense += 3.0 * static_cast<double>(config.intermediate_size) * hidden;
    }
  }
  TIDAL_CHECK(moe_layer == touched_experts.size(), "touched experts given for ",
              touched_experts.size(), " MoE layers, the model has ", moe_layer);
  dense += hidden + static_cast<double>(config.vocab_size) * hidden;  // final norm, lm_head
  bytes.dense_weights = dense * weight_bytes;
  bytes.kv_cache = seqs * static_cast<double>(context_len) *
                   static_cast<double>(config.num_layers) *
                   static_cast<double>(config.kv_cache.elements_per_token()) * kv_bytes;
  return bytes;
}

double kv_cache_bytes_per_token(const ModelConfig& config, double kv_bytes) {
  return static_cast<double>(config.num_layers * config.kv_cache.elements_per_token()) * kv_bytes;
}

double multi_head_kv_cache_bytes_per_token(const ModelConfig& config, double kv_bytes) {
  const int64_t per_head =
      config.mla.enabled() ? config.mla.qk_head_dim() + config.mla.v_head_dim : 2 * config.head_dim;
  return static_cast<double>(config.num_layers * config.num_heads * per_head) * kv_bytes;
}

PrefillFlops prefill_flops(const ModelConfig& config, int64_t tokens) {
  const auto t = static_cast<double>(tokens);
  const double hidden = static_cast<double>(config.hidden_size);
  PrefillFlops flops;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    double per_token = attention_elements(config);
    if (config.is_moe_layer(layer)) {
      per_token += static_cast<double>(config.num_experts) * hidden +
                   static_cast<double>(config.num_experts_per_tok) * expert_elements(config) +
                   shared_expert_elements(config);
    } else {
      per_token += 3.0 * static_cast<double>(config.intermediate_size) * hidden;
    }
    flops.matmul += 2.0 * t * per_token;
    // Token i attends to i + 1 keys: QK^T and PV are each 2 * head_dim FLOPs per (query, key,
    // head). For latent attention the floor is its cheaper form for a prefill, keys and values
    // expanded from the latent once per token (kv_b_proj: 2 * heads * latent * (nope + v) FLOPs
    // a token) and attention over qk_head_dim + v_head_dim; tidal's absorbed form scores over
    // latent + rope dims instead (docs in bench/README.md).
    const double pairs = t * (t + 1) / 2;
    const double heads = static_cast<double>(config.num_heads);
    if (config.mla.enabled()) {
      const MlaConfig& m = config.mla;
      const double latent = static_cast<double>(m.kv_lora_rank);
      flops.attention += 2.0 * heads * static_cast<double>(m.qk_head_dim() + m.v_head_dim) * pairs;
      flops.matmul +=
          2.0 * t * heads * latent * static_cast<double>(m.qk_nope_head_dim + m.v_head_dim);
    } else {
      flops.attention += 2.0 * 2.0 * heads * static_cast<double>(config.head_dim) * pairs;
    }
  }
  flops.matmul += 2.0 * static_cast<double>(config.vocab_size) * hidden;  // the last token's logits
  return flops;
}

}  // namespace tidal
