// Qwen2-MoE: biases on q, k and v (not o), no q/k norm, softmax top-k routing (norm_topk_prob
// false in the published models), and a shared expert behind a sigmoid gate in every MoE block.
#include "model/arch/qwen2_moe/qwen2_moe.h"

#include "model/layers/moe_decoder.h"

namespace tidal {
namespace {

void parse_config(const ConfigFields& fields, ModelConfig& config) {
  parse_sparse_moe_fields(fields, config);
  // Qwen2's q, k and v projections always have biases (transformers 5 names the switch qkv_bias).
  config.attention_bias = fields.boolean("qkv_bias", true);
  config.attention_output_bias = false;
  config.qk_norm = false;
  const int64_t shared = fields.required_int("shared_expert_intermediate_size");
  if (shared < 0) fields.fail("shared_expert_intermediate_size", "must not be negative");
  config.shared_expert_intermediate_size = shared;
  config.shared_expert_gated = shared > 0;
}

std::unique_ptr<CausalLm> make_model(Backend& backend, ModelConfig config, Checkpoint checkpoint,
                                     ModelShard shard) {
  return std::make_unique<MoeDecoder>(backend, std::move(config), std::move(checkpoint),
                                      std::move(shard), MoeDecoderNames{});
}

std::vector<SyntheticTensor> checkpoint_tensors(const ModelConfig& config) {
  return MoeDecoder::checkpoint_tensors(config, MoeDecoderNames{});
}

}  // namespace

const ModelFamily& qwen2_moe_family() {
  static const ModelFamily family{.architecture = "Qwen2MoeForCausalLM",
                                  .model_type = "qwen2_moe",
                                  .parse_config = parse_config,
                                  .make_model = make_model,
                                  .checkpoint_tensors = checkpoint_tensors};
  return family;
}

}  // namespace tidal
