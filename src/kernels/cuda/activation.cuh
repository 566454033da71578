// SwiGLU activation on the GPU: out = silu(gate) * up over bf16 rows of [gate | up].
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

cudaError_t silu_and_mul_bf16(const __nv_bfloat16* gate_up, int64_t num_tokens, int64_t width,
                              __nv_bfloat16* out, cudaStream_t stream);

}  // namespace tidal::cuda
