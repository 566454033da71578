// The MoE block (router, top-k, experts) and the dense SwiGLU MLP.
#include "model/layers/feed_forward.h"

namespace tidal {

DenseMlpWeights DenseMlpWeights::load(WeightStore& store, const ModelConfig& config,
                                      const std::string& prefix) {
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const Checkpoint& checkpoint = store.checkpoint();
  const TensorInfo& gate = checkpoint.tensor(prefix + "gate_proj.weight", {inter, hidden});
  const TensorInfo& up = checkpoint.tensor(prefix + "up_proj.weight", {inter, hidden});
  DenseMlpWeights weights{.gate_up = store.allocate(*gate.dtype, {2 * inter, hidden}),
                          .down = store.get(prefix + "down_proj.weight", {hidden, inter})};
  store.copy_into(weights.gate_up, 0, gate);
  store.copy_into(weights.gate_up, gate.data.size(), up);
  return weights;
}

MoeWeights MoeWeights::load(WeightStore& store, const ModelConfig& config,
                            const std::string& prefix) {
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.moe_intermediate_size;
  const int64_t experts = config.num_experts;
  const Checkpoint& checkpoint = store.checkpoint();
  MoeWeights weights{.router = store.get(prefix + "gate.weight", {experts, hidden}), .experts = {}};

  if (checkpoint.has(prefix + "experts.gate_up_proj")) {
    const TensorInfo& gate_up =
        checkpoint.tensor(prefix + "experts.gate_up_proj", {experts, 2 * inter, hidden});
    const TensorInfo& down =
        checkpoint.tensor(prefix + "experts.down_proj", {experts, hidden, inter});
    weights.experts.gate_up = store.allocate(*gate_up.dtype, {experts, 2 * inter, hidden});
    weights.experts.down = store.allocate(*down.dtype, {experts, hidden, inter});
    store.copy_into(weights.experts.gate_up, 0, gate_up);
    store.copy_into(weights.experts.down, 0, down);
    return weights;
  }
  const std::string first = prefix + "experts.0.gate_proj.weight";
  const DType dtype = *checkpoint.tensor(first, {inter, hidden}).dtype;
  weights.experts.gate_up = store.allocate(dtype, {experts, 2 * inter, hidden});
  weights.experts.down = store.allocate(dtype, {experts, hidden, inter});
  const size_t projection_bytes = static_cast<size_t>(inter * hidden) * dtype_size(dtype);
  for (int64_t e = 0; e < experts; ++e) {
    const std::string expert = prefix + "experts." + std::to_string(e) + ".";
    const size_t slot = static_cast<size_t>(e);
    store.copy_into(weights.experts.gate_up, slot * 2 * projection_bytes,
                    checkpoint.tensor(expert + "gate_proj.weight", {inter, hidden}));
    store.copy_into(weights.experts.gate_up, (slot * 2 + 1) * projection_bytes,
                    checkpoint.tensor(expert + "up_proj.weight", {inter, hidden}));
    store.copy_into(weights.experts.down, slot * projection_bytes,
                    checkpoint.tensor(expert + "down_proj.weight", {hidden, inter}));
  }
  return weights;
}

Tensor dense_mlp_forward(Backend& backend, Workspace& workspace, const DenseMlpWeights& weights,
                         const Tensor& x) {
  const int64_t tokens = x.dim(0);
  const int64_t inter = weights.down.dim(1);
  const DType act = backend.activation_dtype();
  const Tensor gate_up = workspace.take(act, {tokens, 2 * inter});
  backend.linear(x, weights.gate_up, nullptr, gate_up);
  const Tensor activated = workspace.take(act, {tokens, inter});
  backend.silu_and_mul(gate_up, activated);
  const Tensor out = workspace.take(act, {tokens, x.dim(1)});
  backend.linear(activated, weights.down, nullptr, out);
  return out;
}

Tensor moe_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                   const MoeWeights& weights, const Tensor& x) {
  const int64_t tokens = x.dim(0);
  const int64_t k = config.num_experts_per_tok;
  const Tensor logits = workspace.take(DType::kF32, {tokens, config.num_experts});
  backend.linear(x, weights.router, nullptr, logits);
  const Tensor topk_weights = workspace.take(DType::kF32, {tokens, k});
  const Tensor topk_ids = workspace.take(DType::kI32, {tokens, k});
  backend.router_topk(logits, config.norm_topk_prob, topk_weights, topk_ids);
  const Tensor out = workspace.take(backend.activation_dtype(), {tokens, config.hidden_size});
  // One rank holds every expert in slot order, so logical ids are slots.
  backend.moe_experts(x, topk_ids, topk_weights, weights.experts, out);
  return out;
}

}  // namespace tidal
