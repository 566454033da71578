// Qwen3-MoE: weight loading and the forward step, following Hugging Face's Qwen3MoeForCausalLM.
#include "model/arch/qwen3_moe.h"

#include <algorithm>
#include <chrono>

#include "common/logging.h"

namespace tidal {

Qwen3MoeModel::Qwen3MoeModel(Backend& backend, ModelConfig config, Checkpoint checkpoint,
                             ModelShard shard)
    : backend_(&backend),
      config_(std::move(config)),
      executor_(shard.executor != nullptr ? shard.executor : &local_executor_),
      store_(backend, std::move(checkpoint)) {
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
    layer.attention = AttentionWeights::load(store_, config_, prefix + "self_attn.");
    layer.is_moe = config_.is_moe_layer(i);
    if (layer.is_moe) {
      const size_t moe_index = static_cast<size_t>(std::count_if(
          layers_.begin(), layers_.end(), [](const Layer& earlier) { return earlier.is_moe; }));
      layer.moe = MoeWeights::load(store_, config_, prefix + "mlp.",
                                   shard.slot_experts_by_moe_layer.empty()
                                       ? shard.slot_experts
                                       : shard.slot_experts_by_moe_layer[moe_index]);
    } else {
      layer.mlp = DenseMlpWeights::load(store_, config_, prefix + "mlp.");
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

std::vector<ExpertSlots> Qwen3MoeModel::moe_expert_slots() const {
  std::vector<ExpertSlots> slots;
  for (const Layer& layer : layers_) {
    if (layer.is_moe) slots.push_back(layer.moe.experts);
  }
  return slots;
}

size_t Qwen3MoeModel::load_expert(size_t moe_layer, int64_t slot, int32_t expert) {
  size_t seen = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i].is_moe || seen++ != moe_layer) continue;
    layers_[i].moe.load_expert(store_, config_, "model.layers." + std::to_string(i) + ".mlp.", slot,
                               expert);
    const ExpertSlots& experts = layers_[i].moe.experts;
    return (experts.gate_up.num_bytes() + experts.down.num_bytes()) /
           static_cast<size_t>(experts.gate_up.dim(0));
  }
  TIDAL_FAIL("MoE layer ", moe_layer, " of ", seen);
}

Tensor Qwen3MoeModel::forward(const ForwardBatch& batch, std::span<const KvCacheLayer> kv_cache,
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
        attention_forward(backend, workspace, config_, layer.attention, normed, batch, kv_cache[i]);
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
