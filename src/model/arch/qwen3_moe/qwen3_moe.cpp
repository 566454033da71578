// Qwen3-MoE: per-head q/k RMSNorm before RoPE, softmax top-k routing with optional
// renormalisation, dense layers by mlp_only_layers / decoder_sparse_step, no shared expert.
#include "model/arch/qwen3_moe/qwen3_moe.h"

#include "model/layers/moe_decoder.h"

namespace tidal {
namespace {

void parse_config(const ConfigFields& fields, ModelConfig& config) {
  parse_sparse_moe_fields(fields, config);
  config.qk_norm = true;
  // Qwen3's attention_bias covers o_proj too.
  config.attention_output_bias = config.attention_bias;
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

const ModelFamily& qwen3_moe_family() {
  static const ModelFamily family{.architecture = "Qwen3MoeForCausalLM",
                                  .model_type = "qwen3_moe",
                                  .parse_config = parse_config,
                                  .make_model = make_model,
                                  .checkpoint_tensors = checkpoint_tensors};
  return family;
}

}  // namespace tidal
