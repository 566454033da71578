// The model configuration tidal needs, parsed from a Hugging Face config.json in either the
// transformers 4.x style (num_experts, rope_theta, torch_dtype) or the 5.x style
// (num_local_experts, rope_parameters, dtype): the fields every family has, then the family's own
// (model/model_family.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dtype.h"

namespace tidal {

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
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;         // q, k and v projections have biases
  bool attention_output_bias = false;  // o_proj has a bias (Qwen3 with attention_bias)
  bool qk_norm = false;                // RMSNorm of each q and k head before RoPE (Qwen3)
  // A shared expert every token passes through besides its routed ones (Qwen2-MoE), replicated
  // on every rank; 0: none.
  int64_t shared_expert_intermediate_size = 0;
  bool shared_expert_gated = false;    // scaled by sigmoid(shared_expert_gate . x) (Qwen2-MoE)
  DType dtype = DType::kBF16;          // torch_dtype / dtype
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
