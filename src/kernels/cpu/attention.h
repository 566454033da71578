// CPU reference kernels for attention: rotary embedding, KV cache writes (and the q/k norm + RoPE +
// store chain fused), paged causal attention.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace tidal::cpu {

// Rotate-half rotary embedding in place on [tokens, heads, head_dim] rows.
void rope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
          const int32_t* positions, double theta);

// Interleaved-pair rotary embedding in place on [tokens, heads, dim] rows: dims (2i, 2i + 1)
// rotate by positions[t] * inv_freq[i], cos and sin scaled by `factor`.
void rope_pairs(float* x, int64_t num_tokens, int64_t num_heads, int64_t dim,
                const int32_t* positions, const float* inv_freq, float factor);

// The paged cache layout: [num_blocks, block_size, kv_heads, head_dim].
struct PagedKvLayout {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Copies each token's key row (key_width floats) and value row (value_width) into its slot of
// the pools; a slot < 0 is skipped.
void store_kv(const float* k, const float* v, int64_t num_tokens, const int32_t* slot_mapping,
              int64_t num_slots, int64_t key_width, int64_t value_width, float* key_cache,
              float* value_cache);

// rms_norm of each head of q and k with its weight (in place), rope on both (in place), then
// store_kv of k and v, a token at a time: the same arithmetic as those four kernels in turn.
struct QkNormRopeStoreArgs {
  float* q = nullptr;        // [tokens, num_heads, head_dim]
  float* k = nullptr;        // [tokens, num_kv_heads, head_dim]
  const float* v = nullptr;  // [tokens, num_kv_heads, head_dim]
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  const void* q_norm = nullptr;  // [head_dim]
  DType q_norm_dtype = DType::kF32;
  const void* k_norm = nullptr;  // [head_dim]
  DType k_norm_dtype = DType::kF32;
  float eps = 0.0f;
  const int32_t* positions = nullptr;  // [tokens]
  double theta = 0.0;
  const int32_t* slot_mapping = nullptr;  // [tokens]; -1: not stored
  PagedKvLayout layout = {};
  float* key_cache = nullptr;
  float* value_cache = nullptr;
};
void qk_norm_rope_store(const QkNormRopeStoreArgs& args);

struct PagedAttentionArgs {
  const float* q = nullptr;  // [tokens, num_heads, head_dim]
  const float* key_cache = nullptr;
  const float* value_cache = nullptr;
  PagedKvLayout layout;
  int64_t num_heads = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs = 0;
  int64_t max_blocks_per_seq = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [tokens, num_heads, head_dim]
};

// Token i of a sequence with q new tokens and c cached (after storing) sits at position
// c - q + i and attends to positions [0, c - q + i].
void paged_attention(const PagedAttentionArgs& args);

struct LatentAttentionArgs {
  const float* q_latent = nullptr;      // [tokens, num_heads, latent_dim]
  const float* q_rope = nullptr;        // [tokens, num_heads, rope_dim]
  const float* latent_cache = nullptr;  // [slots, latent_dim]
  const float* rope_cache = nullptr;    // [slots, rope_dim]
  int64_t num_heads = 0;
  int64_t latent_dim = 0;
  int64_t rope_dim = 0;
  int64_t block_size = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs = 0;
  int64_t max_blocks_per_seq = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [tokens, num_heads, latent_dim]
};

// Multi-head latent attention over the latent cache (Backend::latent_attention), causal as
// paged_attention.
void latent_attention(const LatentAttentionArgs& args);

}  // namespace tidal::cpu
