// Attention on the GPU: KV cache writes and causal attention over a paged bf16 cache.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

// The paged cache: key and value pools of [num_blocks, block_size, num_kv_heads, head_dim] bf16.
// Token j of a sequence lives in slot block_table[j / block_size] * block_size + j % block_size.
struct PagedKvCache {
  __nv_bfloat16* key = nullptr;
  __nv_bfloat16* value = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Where store_kv_bf16 writes: two pools of num_slots rows, key rows of key_width elements and
// value rows of value_width (equal for grouped-query attention's keys and values; multi-head
// latent attention keeps a latent as the key and a rotary key as the value).
struct KvStoreTarget {
  __nv_bfloat16* key = nullptr;
  __nv_bfloat16* value = nullptr;
  int64_t num_slots = 0;
  int64_t key_width = 0;
  int64_t value_width = 0;
};

// Writes k [tokens, key_width] and v [tokens, value_width] into their slots' rows; a slot < 0
// (padding) or past the pools is skipped.
cudaError_t store_kv_bf16(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t num_tokens,
                          const int32_t* slot_mapping, const KvStoreTarget& target,
                          cudaStream_t stream);

constexpr int64_t kMaxAttentionHeadDim = 256;

struct PagedAttentionParams {
  const __nv_bfloat16* q = nullptr;  // [num_tokens, num_heads, head_dim]
  PagedKvCache cache;
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs = 0;
  int64_t max_blocks_per_seq = 0;
  float scale = 1.0f;
  __nv_bfloat16* out = nullptr;  // [num_tokens, num_heads, head_dim]
};

// Token i of a sequence with q new tokens and c cached (after storing) sits at position
// c - q + i and attends to positions [0, c - q + i]. Prefill (many queries per sequence) and
// decode alike: one block per (token, head), an online softmax in f32. A token outside every
// sequence gets a zero row. head_dim <= kMaxAttentionHeadDim.
cudaError_t paged_attention_bf16(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
