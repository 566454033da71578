// RMSNorm on the GPU: bf16 rows in and out, f32 accumulation, Hugging Face's formula.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

// out[r, :] = weight * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)). In place (out == x) is allowed.
cudaError_t rms_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* weight, int64_t num_rows,
                          int64_t width, float eps, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace tidal::cuda
