// Byte and FLOP counts of a step of a grouped-query-attention MoE model, from the config's shapes.
#include "model/roofline.h"

#include "common/error.h"

namespace tidal {
namespace {

// Weight elements of one layer's attention: q, k, v, o projections and the two head norms.
double attention_elements(const ModelConfig& c) {
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
                   static_cast<double>(config.num_layers) * 2.0 *
                   static_cast<double>(config.num_kv_heads * config.head_dim) * kv_bytes;
  return bytes;
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
    // head).
    flops.attention +=
        2.0 * 2.0 * static_cast<double>(config.num_heads * config.head_dim) * t * (t + 1) / 2;
  }
  flops.matmul += 2.0 * static_cast<double>(config.vocab_size) * hidden;  // the last token's logits
  return flops;
}

}  // namespace tidal
