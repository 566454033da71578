// Multi-head latent attention (DeepSeek-V2/V3). Each token's keys and values are compressed into
// one latent of kv_lora_rank plus one rotary key shared by all heads; only those two are cached
// (about a tenth of grouped-query attention's cache at V3's shapes). kv_b_proj, which expands the
// latent into per-head keys and values, is absorbed: its key half into the query (q_nope becomes a
// query over the latent) and its value half into the output, so attention runs over the cached
// latents directly, in decode and prefill alike.
#pragma once

#include <optional>
#include <string>

#include "backend/workspace.h"
#include "model/forward_batch.h"
#include "model/model_config.h"
#include "model/weight_store.h"

namespace tidal {

struct LatentAttentionWeights {
  std::optional<Tensor> q_a_proj;  // [q_lora_rank, hidden], with q LoRA
  std::optional<Tensor> q_a_norm;  // [q_lora_rank]
  // q_proj (or q_b_proj) split by rows: each head's q_nope rows, then each head's rotary rows.
  Tensor q_nope_proj;  // [heads * qk_nope_head_dim, q input]
  Tensor q_rope_proj;  // [heads * qk_rope_head_dim, q input]
  // kv_a_proj_with_mqa split by rows: the latent's, then the rotary key's.
  Tensor latent_proj;  // [kv_lora_rank, hidden]
  Tensor k_rope_proj;  // [qk_rope_head_dim, hidden]
  Tensor latent_norm;  // [kv_lora_rank]
  // kv_b_proj split per head: the rows that make k_nope, and those that make v.
  Tensor k_up;           // [heads, qk_nope_head_dim, kv_lora_rank]
  Tensor v_up;           // [heads, v_head_dim, kv_lora_rank]
  Tensor o_proj;         // [hidden, heads * v_head_dim]
  Tensor rope_inv_freq;  // [qk_rope_head_dim / 2] F32

  static LatentAttentionWeights load(WeightStore& store, const ModelConfig& config,
                                     const std::string& prefix);
  // The checkpoint's tensors under `prefix` (self_attn.), for dummy weights.
  static void add_checkpoint_tensors(const ModelConfig& config, const std::string& prefix,
                                     std::vector<SyntheticTensor>& tensors);
};

// Stores the step's latents and rotary keys in `cache` and returns the attention output
// [tokens, hidden], taken from the workspace.
Tensor latent_attention_forward(Backend& backend, Workspace& workspace, const ModelConfig& config,
                                const LatentAttentionWeights& weights, const Tensor& x,
                                const ForwardBatch& batch, const KvCacheLayer& cache);

}  // namespace tidal
