// Multi-head latent attention (DeepSeek-V2/V3's MLA) over a paged latent cache, with the key and
// value up-projections absorbed into the query and output sides: every head of a token scores
// the same cached rows (a latent of latent_dim and a rotary key of rope_dim) and sums the same
// latents, so a block takes 16 or 32 heads of one query token and reads each cache tile into
// shared memory once for all of them; at small batches a cluster of blocks splits each token's
// context and merges through distributed shared memory. Tensor cores (mma.sync bf16, f32
// accumulation).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

constexpr int64_t kMaxLatentDim = 512;
constexpr int64_t kMaxLatentRopeDim = 64;

struct LatentAttentionParams {
  const __nv_bfloat16* q_latent = nullptr;  // [num_tokens, num_heads, latent_dim]
  const __nv_bfloat16* q_rope = nullptr;    // [num_tokens, num_heads, rope_dim]
  // The cache pools, rows of slot = block * block_size + offset; 16-byte aligned.
  const __nv_bfloat16* latents = nullptr;    // [num_blocks * block_size, latent_dim]
  const __nv_bfloat16* rope_keys = nullptr;  // [num_blocks * block_size, rope_dim]
  int64_t block_size = 0;
  int64_t latent_dim = 0;
  int64_t rope_dim = 0;
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs = 0;
  int64_t max_blocks_per_seq = 0;
  int64_t max_context_len = 0;  // the longest context (sizes the split), or 0: unknown
  float scale = 1.0f;
  __nv_bfloat16* out = nullptr;  // [num_tokens, num_heads, latent_dim]
};

// Whether latent_attention_bf16 takes these widths: latent_dim a multiple of 32 up to
// kMaxLatentDim, rope_dim a multiple of 8 up to kMaxLatentRopeDim.
bool latent_attention_supports(int64_t latent_dim, int64_t rope_dim);

// Token i of a sequence with q new tokens and c cached (after storing) sits at c - q + i and
// attends to cached tokens [0, c - q + i]: score_j = (q_latent . latent_j + q_rope . rope_key_j)
// * scale, an online softmax in f32 (probabilities rounded to bf16 for the P V product, and
// summed as rounded), out = sum_j p_j latent_j / sum_j p_j. A token outside every sequence gets a
// zero row. One pass, no workspace; allocates nothing and never synchronises.
cudaError_t latent_attention_bf16(const LatentAttentionParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
