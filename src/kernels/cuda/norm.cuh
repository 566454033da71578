// RMSNorm on the GPU: bf16 rows in and out, f32 accumulation, Hugging Face's formula.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/element.cuh"

namespace tidal::cuda {

// out[r, :] = weight * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)) for rows of `width`, the weight
// in its checkpoint dtype. In place (out == x) is allowed. Used per token and per attention head.
cudaError_t rms_norm_bf16(const __nv_bfloat16* x, const void* weight, ElementType weight_type,
                          int64_t num_rows, int64_t width, float eps, __nv_bfloat16* out,
                          cudaStream_t stream);

// residual[r, :] = bf16(residual + x), then out[r, :] = rms_norm of that rounded sum: bit for bit
// add_bf16 then rms_norm_bf16, in one kernel. out may alias x, not residual.
cudaError_t add_rms_norm_bf16(__nv_bfloat16* residual, const __nv_bfloat16* x, const void* weight,
                              ElementType weight_type, int64_t num_rows, int64_t width, float eps,
                              __nv_bfloat16* out, cudaStream_t stream);

}  // namespace tidal::cuda
