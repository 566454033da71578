// Rotary position embedding on the GPU, rotate-half ("neox") layout as Hugging Face Llama/Qwen,
// and Qwen3's attention input chain fused around it (per-head q/k RMSNorm, RoPE, KV store).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/element.cuh"

namespace tidal::cuda {

// In place on q [tokens, num_heads, head_dim] and k [tokens, num_kv_heads, head_dim], both
// contiguous bf16; angles in f32 as Hugging Face computes them, one rounding per output.
cudaError_t rope_bf16(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions,
                      int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                      double theta, cudaStream_t stream);

// Interleaved-pair rotary embedding (DeepSeek's MLA) in place on x [tokens, num_heads, dim]
// contiguous bf16: pair (2i, 2i + 1) rotates by positions[t] * inv_freq[i] (inv_freq [dim / 2]
// f32 on the device), then both outputs are scaled by `factor`; one rounding per output.
cudaError_t rope_pairs_bf16(__nv_bfloat16* x, const int32_t* positions, const float* inv_freq,
                            int64_t num_tokens, int64_t num_heads, int64_t dim, float factor,
                            cudaStream_t stream);

struct QkNormRopeStoreParams {
  __nv_bfloat16* q = nullptr;        // [num_tokens, num_heads, head_dim], rewritten in place
  __nv_bfloat16* k = nullptr;        // [num_tokens, cache.num_kv_heads, head_dim], likewise
  const __nv_bfloat16* v = nullptr;  // [num_tokens, cache.num_kv_heads, head_dim]
  const void* q_norm = nullptr;      // [head_dim]
  const void* k_norm = nullptr;      // [head_dim]
  ElementType norm_type = ElementType::kBF16;  // of both norm weights
  float eps = 0.0f;
  const int32_t* positions = nullptr;  // [num_tokens]
  double theta = 0.0;
  const int32_t* slot_mapping = nullptr;  // [num_tokens]; a slot < 0 or past the cache: not stored
  PagedKvCache cache = {};
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
};

// Bit for bit rms_norm_bf16 on every head of q and k (in place), rope_bf16, then store_kv_bf16 of
// k and v, in one kernel of a block per token. head_dim must be even and at most
// kMaxAttentionHeadDim.
cudaError_t qk_norm_rope_store_bf16(const QkNormRopeStoreParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
