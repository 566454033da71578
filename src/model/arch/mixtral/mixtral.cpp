// Mixtral: every layer sparse, softmax top-k routing renormalised over the chosen experts, experts
// of intermediate_size, no q/k norm, no biases, no shared expert. Published checkpoints keep the
// MoE block under "block_sparse_moe." with experts' w1 (gate), w3 (up) and w2 (down); transformers
// 5 saves it under "mlp." with the experts fused, which the loader also reads.
#include "model/arch/mixtral/mixtral.h"

#include "model/layers/moe_decoder.h"

namespace tidal {
namespace {

MoeDecoderNames published_names() {
  MoeDecoderNames names;
  names.moe_block = "block_sparse_moe.";
  names.moe.experts = {.gate = "w1", .up = "w3", .down = "w2"};
  return names;
}

void parse_config(const ConfigFields& fields, ModelConfig& config) {
  config.num_experts = fields.required_positive("num_local_experts");
  config.num_experts_per_tok = fields.required_positive("num_experts_per_tok");
  if (config.num_experts_per_tok > config.num_experts) {
    fields.fail("num_experts_per_tok", "(", config.num_experts_per_tok,
                ") exceeds num_local_experts (", config.num_experts, ")");
  }
  config.moe_intermediate_size = fields.required_positive("intermediate_size");
  config.intermediate_size = 0;  // no dense layer
  config.norm_topk_prob = true;
  config.decoder_sparse_step = 1;
  if (fields.present("sliding_window")) {
    fields.fail("sliding_window", "is set; tidal does not support sliding-window attention");
  }
}

std::unique_ptr<CausalLm> make_model(Backend& backend, ModelConfig config, Checkpoint checkpoint,
                                     ModelShard shard) {
  MoeDecoderNames names = published_names();
  if (!checkpoint.has("model.layers.0.block_sparse_moe.gate.weight")) names = MoeDecoderNames{};
  return std::make_unique<MoeDecoder>(backend, std::move(config), std::move(checkpoint),
                                      std::move(shard), std::move(names));
}

std::vector<SyntheticTensor> checkpoint_tensors(const ModelConfig& config) {
  return MoeDecoder::checkpoint_tensors(config, published_names());
}

}  // namespace

const ModelFamily& mixtral_family() {
  static const ModelFamily family{.architecture = "MixtralForCausalLM",
                                  .model_type = "mixtral",
                                  .parse_config = parse_config,
                                  .make_model = make_model,
                                  .checkpoint_tensors = checkpoint_tensors};
  return family;
}

}  // namespace tidal
