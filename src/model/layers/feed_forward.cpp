// The MoE block (router, top-k, experts) and the dense SwiGLU MLP.
#include "model/layers/feed_forward.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

namespace tidal {
namespace {

// TEST-ONLY knob: TIDAL_TEST_ROUTER_BIAS="<expert>:<bias>,..." adds each bias to that expert's
// router logit before top-k, in every MoE layer, so tests and benchmarks can skew routing toward
// a few experts and exercise expert load balancing. It changes the model's outputs: never set it
// in serving. Read once per process (each rank reads its own environment, inherited from the
// front); applied as the router's bias on the device, so it works on every backend and in graphs.
const std::vector<std::pair<int64_t, float>>& test_router_bias() {
  static const std::vector<std::pair<int64_t, float>> bias = [] {
    std::vector<std::pair<int64_t, float>> parsed;
    const char* value = std::getenv("TIDAL_TEST_ROUTER_BIAS");
    if (value == nullptr) return parsed;
    std::istringstream entries(value);
    std::string entry;
    while (std::getline(entries, entry, ',')) {
      if (entry.empty()) continue;
      const size_t colon = entry.find(':');
      TIDAL_CHECK(colon != std::string::npos, "TIDAL_TEST_ROUTER_BIAS entry '", entry,
                  "' is not <expert>:<bias>");
      parsed.emplace_back(std::stoll(entry.substr(0, colon)), std::stof(entry.substr(colon + 1)));
    }
    return parsed;
  }();
  return bias;
}

}  // namespace

DenseMlpWeights DenseMlpWeights::load(WeightStore& store, const ModelConfig& config,
                                      const std::string& prefix, int64_t intermediate) {
  const int64_t hidden = config.hidden_size;
  const int64_t inter = intermediate;
  const Checkpoint& checkpoint = store.checkpoint();
  const TensorInfo& gate = checkpoint.tensor(prefix + "gate_proj.weight", {inter, hidden});
  const TensorInfo& up = checkpoint.tensor(prefix + "up_proj.weight", {inter, hidden});
  DenseMlpWeights weights{.gate_up = store.allocate(*gate.dtype, {2 * inter, hidden}, inter),
                          .down = store.get(prefix + "down_proj.weight", {hidden, inter})};
  store.copy_matrix_into(weights.gate_up, 0, 0, gate);
  store.copy_matrix_into(weights.gate_up, 0, inter, up);
  return weights;
}

MoeWeights MoeWeights::load(WeightStore& store, const ModelConfig& config,
                            const std::string& prefix, const MoeWeightNames& names,
                            const std::vector<int32_t>& slot_experts) {
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.moe_intermediate_size;
  const int64_t experts = config.num_experts;
  const auto slots = static_cast<int64_t>(slot_experts.size());
  const Checkpoint& checkpoint = store.checkpoint();
  MoeWeights weights{.router = store.get(prefix + "gate.weight", {experts, hidden}),
                     .experts = {},
                     .shared_expert = std::nullopt,
                     .shared_expert_gate = std::nullopt,
                     .selection_bias = std::nullopt,
                     .names = names};
  if (config.router.selection_bias) {
    const std::string name = prefix + names.selection_bias;
    const TensorInfo& bias = checkpoint.tensor(name, {experts});
    if (bias.dtype == DType::kF32) {
      weights.selection_bias = store.get(name, {experts});
    } else {
      // The router adds it in f32; a checkpoint cast to 16 bits is widened here, once.
      TIDAL_CHECK(
          !checkpoint.is_synthetic() && (bias.dtype == DType::kBF16 || bias.dtype == DType::kF16),
          bias.file, ": tensor '", name, "' is ", bias.dtype_name,
          "; tidal reads it as F32, BF16 or F16");
      std::vector<float> values(static_cast<size_t>(experts));
      for (size_t e = 0; e < values.size(); ++e) {
        uint16_t bits = 0;
        std::memcpy(&bits, bias.data.data() + 2 * e, 2);
        values[e] = bias.dtype == DType::kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
      }
      weights.selection_bias = store.allocate(DType::kF32, {experts});
      store.backend().copy_from_host(weights.selection_bias->data, values.data(),
                                     values.size() * sizeof(float));
    }
  }
  if (config.shared_expert_intermediate_size > 0) {
    weights.shared_expert = DenseMlpWeights::load(store, config, prefix + names.shared_expert,
                                                  config.shared_expert_intermediate_size);
    if (config.shared_expert_gated) {
      weights.shared_expert_gate = store.get(prefix + names.shared_expert_gate, {1, hidden});
    }
  }
  if (const auto& bias = test_router_bias(); !bias.empty()) {
    std::vector<float> values(static_cast<size_t>(experts), 0.0f);
    for (const auto& [expert, add] : bias) {
      TIDAL_CHECK(expert >= 0 && expert < experts, "TIDAL_TEST_ROUTER_BIAS expert ", expert, " of ",
                  experts);
      values[static_cast<size_t>(expert)] += add;
    }
    weights.router_test_bias = store.allocate(DType::kF32, {experts});
    store.backend().copy_from_host(weights.router_test_bias.data, values.data(),
                                   values.size() * sizeof(float));
  }

  DType dtype;
  if (checkpoint.has(prefix + "experts.gate_up_proj")) {
    dtype = *checkpoint.tensor(prefix + "experts.gate_up_proj", {experts, 2 * inter, hidden}).dtype;
  } else {
    dtype =
        *checkpoint.tensor(prefix + "experts.0." + names.experts.gate + ".weight", {inter, hidden})
             .dtype;
  }
  weights.experts.gate_up = store.allocate(dtype, {slots, 2 * inter, hidden}, inter);
  weights.experts.down = store.allocate(dtype, {slots, hidden, inter});
  for (int64_t slot = 0; slot < slots; ++slot) {
    // -1: an empty slot (a placement may leave spare slots empty); nothing routes to it.
    const int32_t expert = slot_experts[static_cast<size_t>(slot)];
    if (expert >= 0) weights.load_expert(store, config, prefix, slot, expert);
  }
  return weights;
}

void MoeWeights::load_expert(WeightStore& store, const ModelConfig& config,
                             const std::string& prefix, int64_t slot, int32_t expert) const {
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.moe_intermediate_size;
  const int64_t num_experts = config.num_experts;
  TIDAL_CHECK(expert >= 0 && expert < num_experts, "slot holds expert ", expert, " of ",
              num_experts);
  TIDAL_CHECK(slot >= 0 && slot < experts.gate_up.dim(0), "slot ", slot, " of ",
              experts.gate_up.dim(0));
  const Checkpoint& checkpoint = store.checkpoint();
  if (checkpoint.has(prefix + "experts.gate_up_proj")) {
    store.copy_matrix_into(
        experts.gate_up, slot, 0,
        checkpoint.tensor(prefix + "experts.gate_up_proj", {num_experts, 2 * inter, hidden}),
        expert);
    store.copy_matrix_into(
        experts.down, slot, 0,
        checkpoint.tensor(prefix + "experts.down_proj", {num_experts, hidden, inter}), expert);
    return;
  }
  const std::string name = prefix + "experts." + std::to_string(expert) + ".";
  store.copy_matrix_into(experts.gate_up, slot, 0,
                         checkpoint.tensor(name + names.experts.gate + ".weight", {inter, hidden}));
  store.copy_matrix_into(experts.gate_up, slot, inter,
                         checkpoint.tensor(name + names.experts.up + ".weight", {inter, hidden}));
  store.copy_matrix_into(experts.down, slot, 0,
                         checkpoint.tensor(name + names.experts.down + ".weight", {hidden, inter}));
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
                   const MoeWeights& weights, ExpertExecutor& executor, int64_t moe_layer,
                   const Tensor& x, const Tensor& token_ids) {
  const int64_t tokens = x.dim(0);
  const int64_t k = config.num_experts_per_tok;
  const Tensor logits = workspace.take(DType::kF32, {tokens, config.num_experts});
  const bool biased = weights.router_test_bias.data != nullptr;
  backend.linear(x, weights.router, biased ? &weights.router_test_bias : nullptr, logits);
  const Tensor topk_weights = workspace.take(DType::kF32, {tokens, k});
  const Tensor topk_ids = workspace.take(DType::kI32, {tokens, k});
  const RouterConfig& router = config.router;
  backend.router_topk(
      logits,
      {.sigmoid = router.sigmoid,
       .selection_bias = weights.selection_bias ? &*weights.selection_bias : nullptr,
       .num_groups = router.num_groups,
       .topk_groups = router.topk_groups,
       .group_score_top2_sum = router.group_score_top2_sum,
       .renormalize = config.norm_topk_prob,
       .scaling = router.routed_scaling_factor},
      topk_weights, topk_ids);
  const Tensor out = executor.run(backend, workspace, moe_layer, x, topk_ids, topk_weights,
                                  weights.experts, token_ids);
  if (!weights.shared_expert) return out;
  // The shared experts see every token on every rank, as attention does; their sum with the
  // routed experts' follows the family's reference order (routed first, then shared).
  const Tensor shared = dense_mlp_forward(backend, workspace, *weights.shared_expert, x);
  if (weights.shared_expert_gate) {
    const Tensor gate_logit = workspace.take(DType::kF32, {tokens, 1});
    backend.linear(x, *weights.shared_expert_gate, nullptr, gate_logit);
    backend.add_sigmoid_gated(out, shared, gate_logit, out);
  } else {
    backend.add(out, shared, out);
  }
  return out;
}

}  // namespace tidal
