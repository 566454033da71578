// The model configuration tidal needs, parsed from a Hugging Face config.json in either the
// transformers 4.x style (num_experts, rope_theta, torch_dtype) or the 5.x style
// (num_local_experts, rope_parameters, dtype): the fields every family has, then the family's own
// (model/model_family.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "model/quantization_config.h"

namespace tidal {

// What one token of one layer keeps in the paged KV cache: a row of [key_heads, key_dim] in the
// first pool and one of [value_heads, value_dim] in the second (backend/backend.h KvCacheLayer).
// Grouped-query attention keeps keys and values; multi-head latent attention keeps the
// compressed latent and the rotary key.
struct KvCacheLayout {
  int64_t key_heads = 0;
  int64_t key_dim = 0;
  int64_t value_heads = 0;
  int64_t value_dim = 0;

  int64_t elements_per_token() const { return key_heads * key_dim + value_heads * value_dim; }
};

// Multi-head latent attention (DeepSeek-V2/V3); kv_lora_rank 0: grouped-query attention.
struct MlaConfig {
  int64_t q_lora_rank = 0;  // 0: q_proj reads the hidden state directly (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;

  bool enabled() const { return kv_lora_rank > 0; }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// How the MoE router scores and picks experts (Backend's RouterSpec). The defaults are the Qwen
// and Mixtral router: softmax, plain top-k.
struct RouterConfig {
  bool sigmoid = false;                // DeepSeek-V3 scoring_func "sigmoid"
  bool selection_bias = false;         // gate.e_score_correction_bias (DeepSeek-V3 noaux_tc)
  int64_t num_groups = 1;              // n_group
  int64_t topk_groups = 1;             // topk_group
  bool group_score_top2_sum = false;   // V3: a group scores the sum of its two best; V2: its best
  float routed_scaling_factor = 1.0f;  // the weights' multiplier
};

struct ModelConfig {
  std::string architecture;  // e.g. "Qwen3MoeForCausalLM"
  std::string model_type;    // e.g. "qwen3_moe"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;           // explicit in Qwen3; hidden_size / num_heads when absent
  int64_t intermediate_size = 0;  // dense MLP layers
  int64_t moe_intermediate_size = 0;
  int64_t num_experts = 0;  // 0: no MoE layers at all
  int64_t num_experts_per_tok = 0;
  bool norm_topk_prob = false;
  std::vector<int64_t> mlp_only_layers;
  int64_t decoder_sparse_step = 1;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  // RoPE's inverse frequencies when they are not theta^(-2i/d) (YaRN), and the factor YaRN scales
  // cos and sin by; empty and 1 for plain RoPE.
  std::vector<float> rope_inv_freq;
  float rope_attention_factor = 1.0f;
  // The softmax scale of attention; 0: 1 / sqrt(head_dim).
  float attention_scale = 0.0f;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;         // q, k and v projections have biases
  bool attention_output_bias = false;  // o_proj has a bias (Qwen3 with attention_bias)
  bool qk_norm = false;                // RMSNorm of each q and k head before RoPE (Qwen3)
  // A shared expert every token passes through besides its routed ones (Qwen2-MoE), replicated
  // on every rank; 0: none.
  int64_t shared_expert_intermediate_size = 0;
  bool shared_expert_gated = false;  // scaled by sigmoid(shared_expert_gate . x) (Qwen2-MoE)
  MlaConfig mla;
  RouterConfig router;
  // What the KV cache keeps per token and layer; the common parser sets grouped-query attention's
  // (num_kv_heads x head_dim keys and values), a family may change it.
  KvCacheLayout kv_cache;
  DType dtype = DType::kBF16;  // torch_dtype / dtype
  // An FP8 block-quantized checkpoint (quantization_config); empty: every weight as stored.
  std::optional<Fp8BlockQuantization> fp8;
  std::vector<int32_t> eos_token_ids;  // from config.json and generation_config.json
  int32_t bos_token_id = -1;

  // Hugging Face's rule: a layer is sparse when it is not in mlp_only_layers, the model has
  // experts, and (layer + 1) is a multiple of decoder_sparse_step.
  bool is_moe_layer(int64_t layer) const;
};

// Parses and validates; throws tidal::Error naming `source` and the offending field
// (unknown architecture, missing or wrong-typed field, unsupported rope type or sliding window).
// The architecture picks the family, whose own fields are parsed last.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);

// Reads <directory>/config.json and, when present, <directory>/generation_config.json
// (whose eos_token_id, a number or a list, is merged into eos_token_ids).
ModelConfig load_model_config(const std::string& directory);

}  // namespace tidal
