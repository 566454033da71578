// The grouped-query-attention MoE decoder: weight loading and the forward step.
#include "model/layers/moe_decoder.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"

namespace tidal {

MoeDecoder::MoeDecoder(Backend& backend, ModelConfig config, Checkpoint checkpoint,
                       ModelShard shard, MoeDecoderNames names)
    : backend_(&backend),
      config_(std::move(config)),
      names_(std::move(names)),
      executor_(shard.executor != nullptr ? shard.executor : &local_executor_),
      store_(backend, std::move(checkpoint), config_.fp8) {
  const int64_t hidden = config_.hidden_size;
  const auto started = std::chrono::steady_clock::now();
  if (shard.slot_experts.empty()) {
    for (int32_t e = 0; e < static_cast<int32_t>(config_.num_experts); ++e) {
      shard.slot_experts.push_back(e);
    }
  }
  TIDAL_CHECK(shard.executor != nullptr ||
                  static_cast<int64_t>(shard.slot_experts.size()) == config_.num_experts,
              "without an expert-parallel executor every expert must be local");
  int64_t num_moe_layers = 0;
  for (int64_t i = 0; i < config_.num_layers; ++i) num_moe_layers += config_.is_moe_layer(i);
  TIDAL_CHECK(shard.slot_experts_by_moe_layer.empty() ||
                  static_cast<int64_t>(shard.slot_experts_by_moe_layer.size()) == num_moe_layers,
              "the shard names slots for ", shard.slot_experts_by_moe_layer.size(),
              " MoE layers; the model has ", num_moe_layers);
  embed_tokens_ = store_.get("model.embed_tokens.weight", {config_.vocab_size, hidden});
  layers_.reserve(static_cast<size_t>(config_.num_layers));
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = store_.get(prefix + "input_layernorm.weight", {hidden});
    layer.post_attention_norm = store_.get(prefix + "post_attention_layernorm.weight", {hidden});
    if (config_.mla.enabled()) {
      layer.latent_attention = LatentAttentionWeights::load(store_, config_, prefix + "self_attn.");
    } else {
      layer.attention = AttentionWeights::load(store_, config_, prefix + "self_attn.");
    }
    layer.is_moe = config_.is_moe_layer(i);
    if (layer.is_moe) {
      const size_t moe_index = static_cast<size_t>(std::count_if(
          layers_.begin(), layers_.end(), [](const Layer& earlier) { return earlier.is_moe; }));
      layer.moe = MoeWeights::load(store_, config_, prefix + names_.moe_block, names_.moe,
                                   shard.slot_experts_by_moe_layer.empty()
                                       ? shard.slot_experts
                                       : shard.slot_experts_by_moe_layer[moe_index]);
    } else {
      layer.mlp =
          DenseMlpWeights::load(store_, config_, prefix + "mlp.", config_.intermediate_size);
    }
    layers_.push_back(std::move(layer));
    // Large checkpoints take a while: show progress about every tenth of the layers.
    const int64_t every = std::max<int64_t>(1, config_.num_layers / 10);
    if (config_.num_layers >= 8 && ((i + 1) % every == 0 || i + 1 == config_.num_layers)) {
      log_info("loading weights: layer ", i + 1, "/", config_.num_layers, ", ",
               store_.bytes_copied() >> 20, " MiB copied, ",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
               " s");
    }
  }
  final_norm_ = store_.get("model.norm.weight", {hidden});
  lm_head_ = config_.tie_word_embeddings && !store_.checkpoint().has("lm_head.weight")
                 ? embed_tokens_
                 : store_.get("lm_head.weight", {config_.vocab_size, hidden});
}

std::vector<SyntheticTensor> MoeDecoder::checkpoint_tensors(const ModelConfig& config,
                                                            const MoeDecoderNames& names) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  std::vector<SyntheticTensor> tensors;
  const auto add = [&](std::string name, std::vector<int64_t> shape) {
    tensors.push_back({.name = std::move(name), .dtype = config.dtype, .shape = std::move(shape)});
  };
  // A projection: FP8 with its block scales when the config is block-quantized (as FP8
  // checkpoints store them: embeddings, norms, routers and lm_head stay in the model's dtype).
  const auto add_linear = [&](const std::string& name, std::vector<int64_t> shape) {
    if (!config.fp8) return add(name, std::move(shape));
    std::vector<int64_t> scales(shape.begin(), shape.end() - 2);
    scales.push_back(BlockScales::blocks(shape[shape.size() - 2], config.fp8->block_rows));
    scales.push_back(BlockScales::blocks(shape.back(), config.fp8->block_cols));
    tensors.push_back({.name = name, .dtype = DType::kF8E4M3, .shape = std::move(shape)});
    tensors.push_back(
        {.name = block_scales_name(name), .dtype = DType::kF32, .shape = std::move(scales)});
  };
  const auto add_mlp = [&](const std::string& prefix, int64_t inter) {
    add_linear(prefix + "gate_proj.weight", {inter, hidden});
    add_linear(prefix + "up_proj.weight", {inter, hidden});
    add_linear(prefix + "down_proj.weight", {hidden, inter});
  };
  add("model.embed_tokens.weight", {config.vocab_size, hidden});
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string layer = "model.layers." + std::to_string(i) + ".";
    add(layer + "input_layernorm.weight", {hidden});
    add(layer + "post_attention_layernorm.weight", {hidden});
    const std::string attention = layer + "self_attn.";
    if (config.mla.enabled()) {
      LatentAttentionWeights::add_checkpoint_tensors(config, attention, tensors);
    } else {
      add_linear(attention + "q_proj.weight", {q_width, hidden});
      add_linear(attention + "k_proj.weight", {kv_width, hidden});
      add_linear(attention + "v_proj.weight", {kv_width, hidden});
      add_linear(attention + "o_proj.weight", {hidden, q_width});
    }
    if (config.qk_norm) {
      add(attention + "q_norm.weight", {config.head_dim});
      add(attention + "k_norm.weight", {config.head_dim});
    }
    if (config.attention_bias) {
      add(attention + "q_proj.bias", {q_width});
      add(attention + "k_proj.bias", {kv_width});
      add(attention + "v_proj.bias", {kv_width});
    }
    if (config.attention_output_bias) add(attention + "o_proj.bias", {hidden});
    if (config.is_moe_layer(i)) {
      const std::string moe = layer + names.moe_block;
      const int64_t inter = config.moe_intermediate_size;
      add(moe + "gate.weight", {config.num_experts, hidden});
      if (config.router.selection_bias) {
        tensors.push_back({.name = moe + names.moe.selection_bias,
                           .dtype = DType::kF32,
                           .shape = {config.num_experts}});
      }
      add_linear(moe + "experts.gate_up_proj", {config.num_experts, 2 * inter, hidden});
      add_linear(moe + "experts.down_proj", {config.num_experts, hidden, inter});
      if (config.shared_expert_intermediate_size > 0) {
        add_mlp(moe + names.moe.shared_expert, config.shared_expert_intermediate_size);
        if (config.shared_expert_gated) add(moe + names.moe.shared_expert_gate, {1, hidden});
      }
    } else {
      add_mlp(layer + "mlp.", config.intermediate_size);
    }
  }
  add("model.norm.weight", {hidden});
  if (!config.tie_word_embeddings) add("lm_head.weight", {config.vocab_size, hidden});
  return tensors;
}

std::vector<ExpertSlots> MoeDecoder::moe_expert_slots() const {
  std::vector<ExpertSlots> slots;
  for (const Layer& layer : layers_) {
    if (layer.is_moe) slots.push_back(layer.moe.experts);
  }
  return slots;
}

size_t MoeDecoder::load_expert(size_t moe_layer, int64_t slot, int32_t expert) {
  size_t seen = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i].is_moe || seen++ != moe_layer) continue;
    layers_[i].moe.load_expert(store_, config_,
                               "model.layers." + std::to_string(i) + "." + names_.moe_block, slot,
                               expert);
    return layers_[i].moe.experts.slot_bytes();
  }
  TIDAL_FAIL("MoE layer ", moe_layer, " of ", seen);
}

Tensor MoeDecoder::forward(const ForwardBatch& batch, std::span<const KvCacheLayer> kv_cache,
                           Workspace& workspace) {
  TIDAL_CHECK(kv_cache.size() == layers_.size(), "KV cache has ", kv_cache.size(),
              " layers, the model ", layers_.size());
  Backend& backend = *backend_;
  const int64_t tokens = batch.num_tokens();
  const int64_t hidden = config_.hidden_size;
  const DType act = backend.activation_dtype();

  Tensor residual = workspace.take(act, {tokens, hidden});
  backend.embedding(embed_tokens_, batch.token_ids, residual);
  const Tensor normed = workspace.take(act, {tokens, hidden});
  int64_t moe_layer = 0;
  // Each residual add runs fused with the norm that reads its sum (the same bits as add then
  // rms_norm): after attention the layer's post-attention norm, after the MLP the next layer's
  // input norm. The last layer's sum is only added: the final norm runs on the sampled rows.
  if (!layers_.empty()) {
    backend.rms_norm(residual, layers_.front().input_norm, config_.rms_norm_eps, normed);
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    const Tensor attention =
        layer.latent_attention
            ? latent_attention_forward(backend, workspace, config_, *layer.latent_attention, normed,
                                       batch, kv_cache[i])
            : attention_forward(backend, workspace, config_, layer.attention, normed, batch,
                                kv_cache[i]);
    backend.add_rms_norm(residual, attention, layer.post_attention_norm, config_.rms_norm_eps,
                         normed);
    const Tensor mixed = layer.is_moe
                             ? moe_forward(backend, workspace, config_, layer.moe, *executor_,
                                           moe_layer++, normed, batch.token_ids)
                             : dense_mlp_forward(backend, workspace, layer.mlp, normed);
    if (i + 1 < layers_.size()) {
      backend.add_rms_norm(residual, mixed, layers_[i + 1].input_norm, config_.rms_norm_eps,
                           normed);
    } else {
      backend.add(residual, mixed, residual);
    }
  }
  // Only the rows that sample need the final norm and the vocabulary projection.
  const int64_t samples = batch.sample_rows.num_elements();
  const Tensor last = workspace.take(act, {samples, hidden});
  backend.gather_rows(residual, batch.sample_rows, last);
  backend.rms_norm(last, final_norm_, config_.rms_norm_eps, last);
  const Tensor logits = workspace.take(DType::kF32, {samples, config_.vocab_size});
  backend.linear(last, lm_head_, nullptr, logits);
  return logits;
}

}  // namespace tidal
