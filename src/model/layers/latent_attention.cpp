// Multi-head latent attention: weight loading (kv_b_proj and the fused projections split by rows
// once, at load) and the forward step over the latent cache.
#include "model/layers/latent_attention.h"

#include <functional>

#include "model/rope_scaling.h"

namespace tidal {
namespace {

// DeepSeek's q_a_layernorm and kv_a_layernorm use RMSNorm's default epsilon, whatever
// rms_norm_eps says.
constexpr float kLatentNormEps = 1e-6f;

// Rows [first, first + count) of every group of `group_rows` rows of checkpoint tensor `info`
// ([groups * group_rows, columns]), stacked: one head's share of a projection that interleaves
// heads.
Tensor gather_rows(WeightStore& store, const TensorInfo& info, int64_t groups, int64_t group_rows,
                   int64_t first, int64_t count, int64_t columns) {
  const Tensor out = store.allocate(*info.dtype, {groups * count, columns});
  const size_t row_bytes = static_cast<size_t>(columns) * dtype_size(*info.dtype);
  for (int64_t g = 0; g < groups; ++g) {
    store.copy_slice_into(out, static_cast<size_t>(g * count) * row_bytes, info,
                          static_cast<size_t>(g * group_rows + first) * row_bytes,
                          static_cast<size_t>(count) * row_bytes);
  }
  return out;
}

}  // namespace

LatentAttentionWeights LatentAttentionWeights::load(WeightStore& store, const ModelConfig& config,
                                                    const std::string& prefix) {
  const MlaConfig& mla = config.mla;
  const int64_t hidden = config.hidden_size;
  const int64_t heads = config.num_heads;
  const int64_t nope = mla.qk_nope_head_dim;
  const int64_t rope = mla.qk_rope_head_dim;
  const int64_t latent = mla.kv_lora_rank;
  const Checkpoint& checkpoint = store.checkpoint();
  LatentAttentionWeights weights;
  int64_t q_input = hidden;
  std::string q_name = prefix + "q_proj.weight";
  if (mla.q_lora_rank > 0) {
    weights.q_a_proj = store.get(prefix + "q_a_proj.weight", {mla.q_lora_rank, hidden});
    weights.q_a_norm = store.get(prefix + "q_a_layernorm.weight", {mla.q_lora_rank});
    q_input = mla.q_lora_rank;
    q_name = prefix + "q_b_proj.weight";
  }
  // The projections split by rows here keep no FP8 blocks (a head's rows straddle them): an FP8
  // checkpoint's are dequantized once, to the dtype the backend computes in (f32 on the CPU
  // reference, so that it computes what the checkpoint defines), as vLLM does for kv_b_proj.
  const DType widened = store.backend().activation_dtype();
  const auto split_source = [&](const std::string& name, std::initializer_list<int64_t> shape) {
    return std::cref(store.dequantized(checkpoint.tensor(name, shape), widened));
  };
  const TensorInfo& q = split_source(q_name, {heads * (nope + rope), q_input});
  weights.q_nope_proj = gather_rows(store, q, heads, nope + rope, 0, nope, q_input);
  weights.q_rope_proj = gather_rows(store, q, heads, nope + rope, nope, rope, q_input);
  const TensorInfo& kv_a =
      split_source(prefix + "kv_a_proj_with_mqa.weight", {latent + rope, hidden});
  weights.latent_proj = gather_rows(store, kv_a, 1, latent + rope, 0, latent, hidden);
  weights.k_rope_proj = gather_rows(store, kv_a, 1, latent + rope, latent, rope, hidden);
  weights.latent_norm = store.get(prefix + "kv_a_layernorm.weight", {latent});
  const int64_t v_dim = mla.v_head_dim;
  const TensorInfo& kv_b =
      split_source(prefix + "kv_b_proj.weight", {heads * (nope + v_dim), latent});
  weights.k_up = gather_rows(store, kv_b, heads, nope + v_dim, 0, nope, latent)
                     .reshaped({heads, nope, latent});
  weights.v_up = gather_rows(store, kv_b, heads, nope + v_dim, nope, v_dim, latent)
                     .reshaped({heads, v_dim, latent});
  weights.o_proj = store.get(prefix + "o_proj.weight", {hidden, heads * v_dim});
  const std::vector<float> inv_freq = config.rope_inv_freq.empty()
                                          ? default_inv_freq(rope, config.rope_theta)
                                          : config.rope_inv_freq;
  TIDAL_CHECK(static_cast<int64_t>(inv_freq.size()) == rope / 2, "RoPE has ", inv_freq.size(),
              " frequencies for a rotary dimension of ", rope);
  weights.rope_inv_freq = store.allocate(DType::kF32, {rope / 2});
  store.backend().copy_from_host(weights.rope_inv_freq.data, inv_freq.data(),
                                 inv_freq.size() * sizeof(float));
  return weights;
}

void LatentAttentionWeights::add_checkpoint_tensors(const ModelConfig& config,
                                                    const std::string& prefix,
                                                    std::vector<SyntheticTensor>& tensors) {
  const MlaConfig& mla = config.mla;
  const int64_t hidden = config.hidden_size;
  const int64_t heads = config.num_heads;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    tensors.push_back({.name = prefix + name, .dtype = config.dtype, .shape = std::move(shape)});
  };
  const int64_t q_width = heads * mla.qk_head_dim();
  if (mla.q_lora_rank > 0) {
    add("q_a_proj.weight", {mla.q_lora_rank, hidden});
    add("q_a_layernorm.weight", {mla.q_lora_rank});
    add("q_b_proj.weight", {q_width, mla.q_lora_rank});
  } else {
    add("q_proj.weight", {q_width, hidden});
  }
  add("kv_a_proj_with_mqa.weight", {mla.kv_lora_rank + mla.qk_rope_head_dim, hidden});
  add("kv_a_layernorm.weight", {mla.kv_lora_rank});
  add("kv_b_proj.weight", {heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank});
  add("o_proj.weight", {hidden, heads * mla.v_head_dim});
}

Tensor latent_attention_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                                const LatentAttentionWeights& weights, const Tensor& x,
                                const ForwardBatch& batch, const KvCacheLayer& cache) {
  const MlaConfig& mla = config.mla;
  const int64_t tokens = x.dim(0);
  const int64_t heads = config.num_heads;
  const int64_t nope = mla.qk_nope_head_dim;
  const int64_t rope = mla.qk_rope_head_dim;
  const int64_t latent_dim = mla.kv_lora_rank;
  const DType act = backend.activation_dtype();

  Tensor q_input = x;
  if (weights.q_a_proj) {
    q_input = workspace.take(act, {tokens, mla.q_lora_rank});
    backend.linear(x, *weights.q_a_proj, nullptr, q_input);
    backend.rms_norm(q_input, *weights.q_a_norm, kLatentNormEps, q_input);
  }
  const Tensor q_nope = workspace.take(act, {tokens, heads, nope});
  const Tensor q_rope = workspace.take(act, {tokens, heads, rope});
  backend.linear(q_input, weights.q_nope_proj, nullptr, q_nope.reshaped({tokens, heads * nope}));
  backend.linear(q_input, weights.q_rope_proj, nullptr, q_rope.reshaped({tokens, heads * rope}));

  const Tensor latent = workspace.take(act, {tokens, 1, latent_dim});
  const Tensor k_rope = workspace.take(act, {tokens, 1, rope});
  const Tensor latent_rows = latent.reshaped({tokens, latent_dim});
  backend.linear(x, weights.latent_proj, nullptr, latent_rows);
  backend.rms_norm(latent_rows, weights.latent_norm, kLatentNormEps, latent_rows);
  backend.linear(x, weights.k_rope_proj, nullptr, k_rope.reshaped({tokens, rope}));
  backend.rope_pairs(q_rope, batch.positions, weights.rope_inv_freq, config.rope_attention_factor);
  backend.rope_pairs(k_rope, batch.positions, weights.rope_inv_freq, config.rope_attention_factor);
  backend.store_kv(latent, k_rope, batch.slot_mapping, cache);

  // q_nope . (W_uk c) = (q_nope W_uk) . c: the query over the latent.
  const Tensor q_latent = workspace.take(act, {tokens, heads, latent_dim});
  backend.head_linear(q_nope, weights.k_up, /*weight_k_major=*/true, q_latent);
  const Tensor context = workspace.take(act, {tokens, heads, latent_dim});
  backend.latent_attention(q_latent, q_rope, cache, batch.attention, config.attention_scale,
                           context);
  // sum_j p_j (W_uv c_j) = W_uv (sum_j p_j c_j): each head's values from its latent context.
  const Tensor values = workspace.take(act, {tokens, heads, mla.v_head_dim});
  backend.head_linear(context, weights.v_up, /*weight_k_major=*/false, values);
  const Tensor out = workspace.take(act, {tokens, config.hidden_size});
  backend.linear(values.reshaped({tokens, heads * mla.v_head_dim}), weights.o_proj, nullptr, out);
  return out;
}

}  // namespace tidal
