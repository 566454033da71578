// CPU reference kernels for attention: rotary embedding, KV cache writes, paged causal attention.
#pragma once

#include <cstdint>

namespace tidal::cpu {

// Rotate-half rotary embedding in place on [tokens, heads, head_dim] rows.
void rope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
          const int32_t* positions, double theta);

// The paged cache layout: [num_blocks, block_size, kv_heads, head_dim].
struct PagedKvLayout {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

void store_kv(const float* k, const float* v, int64_t num_tokens, const int32_t* slot_mapping,
              const PagedKvLayout& layout, float* key_cache, float* value_cache);

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

}  // namespace tidal::cpu
