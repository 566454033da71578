// The tensor list of a Qwen3-MoE checkpoint, by Hugging Face's names, for dummy weights.
#include "model/dummy_weights.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/mapped_file.h"

namespace tidal {

ModelConfig load_dummy_config(const DummyModelOptions& options) {
  TIDAL_CHECK(!options.config_file.empty(), "dummy weights need a config.json (--config FILE)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_text_file(options.config_file));
  } catch (const nlohmann::json::parse_error& error) {
    TIDAL_FAIL(options.config_file, ": not valid JSON (", error.what(), ")");
  }
  ModelConfig config = parse_model_config(json, options.config_file);
  if (options.num_layers != 0) {
    TIDAL_CHECK(options.num_layers > 0 && options.num_layers <= config.num_layers,
                options.config_file, ": --num-layers ", options.num_layers, " outside [1, ",
                config.num_layers, "]");
    config.num_layers = options.num_layers;
  }
  return config;
}

Checkpoint dummy_checkpoint(const ModelConfig& config, uint64_t seed) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  const DType dtype = config.dtype;
  std::vector<SyntheticTensor> tensors;
  const auto add = [&](std::string name, std::vector<int64_t> shape) {
    tensors.push_back({.name = std::move(name), .dtype = dtype, .shape = std::move(shape)});
  };
  add("model.embed_tokens.weight", {config.vocab_size, hidden});
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string layer = "model.layers." + std::to_string(i) + ".";
    add(layer + "input_layernorm.weight", {hidden});
    add(layer + "post_attention_layernorm.weight", {hidden});
    const std::string attention = layer + "self_attn.";
    add(attention + "q_proj.weight", {q_width, hidden});
    add(attention + "k_proj.weight", {kv_width, hidden});
    add(attention + "v_proj.weight", {kv_width, hidden});
    add(attention + "o_proj.weight", {hidden, q_width});
    add(attention + "q_norm.weight", {config.head_dim});
    add(attention + "k_norm.weight", {config.head_dim});
    if (config.attention_bias) {
      add(attention + "q_proj.bias", {q_width});
      add(attention + "k_proj.bias", {kv_width});
      add(attention + "v_proj.bias", {kv_width});
    }
    const std::string mlp = layer + "mlp.";
    if (config.is_moe_layer(i)) {
      const int64_t inter = config.moe_intermediate_size;
      add(mlp + "gate.weight", {config.num_experts, hidden});
      add(mlp + "experts.gate_up_proj", {config.num_experts, 2 * inter, hidden});
      add(mlp + "experts.down_proj", {config.num_experts, hidden, inter});
    } else {
      const int64_t inter = config.intermediate_size;
      add(mlp + "gate_proj.weight", {inter, hidden});
      add(mlp + "up_proj.weight", {inter, hidden});
      add(mlp + "down_proj.weight", {hidden, inter});
    }
  }
  add("model.norm.weight", {hidden});
  if (!config.tie_word_embeddings) add("lm_head.weight", {config.vocab_size, hidden});
  return Checkpoint::synthetic(tensors, seed);
}

}  // namespace tidal
