// Device arithmetic that the RMSNorm and RoPE kernels share with their fused forms. Every
// operation is an explicit round-to-nearest intrinsic (__fmaf_rn, __fmul_rn, ...), which the
// compiler may not contract into or out of an FMA: left to itself it contracts the same source
// expression differently in different kernels, and a fused kernel would then round differently
// from the unfused chain. Each intrinsic is the operation the plain kernels compiled to before
// (read off their PTX and SASS), so their results do not change. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

constexpr int kNormMaxThreads = 256;

// rms_norm_bf16's block for rows of `width`: the smallest power of two from 32 that covers the
// row, at most kNormMaxThreads (narrow per-head rows get one or a few warps, not idle threads).
// Thread j sums elements j, j + threads, ... in that order.
__host__ __device__ inline int rms_norm_threads(int64_t width) {
  int threads = 32;
  while (threads < kNormMaxThreads && threads < width) threads *= 2;
  return threads;
}

// One more square into a thread's running sum.
__device__ __forceinline__ float sum_square(float sum, float value) {
  return __fmaf_rn(value, value, sum);
}

// Sum over a warp's lanes, the same butterfly everywhere (every lane ends with the same value).
__device__ __forceinline__ float warp_butterfly_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value = __fadd_rn(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

__device__ __forceinline__ float rms_norm_inv_rms(float sum_squares, int64_t width, float eps) {
  return rsqrtf(__fadd_rn(__fdiv_rn(sum_squares, static_cast<float>(width)), eps));
}

// weight * (value * inv_rms), rounded to bf16.
__device__ __forceinline__ __nv_bfloat16 rms_norm_scale(float weight, float value, float inv_rms) {
  return __float2bfloat16(__fmul_rn(weight, __fmul_rn(value, inv_rms)));
}

// Rotates the pair (row[i], row[i + half]) = (first, second): first * cos - second * sin and
// second * cos + first * sin, one rounding per output after an FMA.
__device__ __forceinline__ void rope_rotate(float first, float second, float cosine, float sine,
                                            __nv_bfloat16* out_first, __nv_bfloat16* out_second) {
  *out_first = __float2bfloat16(__fmaf_rn(first, cosine, -__fmul_rn(second, sine)));
  *out_second = __float2bfloat16(__fmaf_rn(first, sine, __fmul_rn(second, cosine)));
}

}  // namespace tidal::cuda
