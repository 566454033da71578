// Rotary position embedding on the GPU, rotate-half ("neox") layout as Hugging Face Llama/Qwen.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

// In place on q [tokens, num_heads, head_dim] and k [tokens, num_kv_heads, head_dim], both
// contiguous bf16; angles in f32 as Hugging Face computes them, one rounding per output.
cudaError_t rope_bf16(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions,
                      int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                      double theta, cudaStream_t stream);

}  // namespace tidal::cuda
