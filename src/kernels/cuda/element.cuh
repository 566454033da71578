// Element types the CUDA kernels read (weights as stored in a checkpoint) and their conversions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace tidal::cuda {

// The dtype of a weight or table the kernels read; activations are always bf16.
enum class ElementType { kF32, kF16, kBF16 };

__device__ __forceinline__ float to_float(float value) {
  return value;
}
__device__ __forceinline__ float to_float(__half value) {
  return __half2float(value);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

__device__ __forceinline__ __nv_bfloat16 to_bf16(float value) {
  return __float2bfloat16(value);
}
__device__ __forceinline__ __nv_bfloat16 to_bf16(__half value) {
  return __float2bfloat16(__half2float(value));
}
__device__ __forceinline__ __nv_bfloat16 to_bf16(__nv_bfloat16 value) {
  return value;
}

// Store helpers so one kernel template writes f32 or bf16 outputs.
__device__ __forceinline__ void store_float(float* out, float value) {
  *out = value;
}
__device__ __forceinline__ void store_float(__nv_bfloat16* out, float value) {
  *out = __float2bfloat16(value);
}

// Calls fn(T{}) with T the C++ type of `type`, so a launcher instantiates each dtype once.
template <typename Fn>
cudaError_t dispatch_element(ElementType type, Fn&& fn) {
  switch (type) {
    case ElementType::kF32:
      return fn(float{});
    case ElementType::kF16:
      return fn(__half{});
    case ElementType::kBF16:
      return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Blocks for a grid-stride loop over `count` items: enough to fill the GPU, never zero.
inline unsigned grid_for(long long count, int threads, unsigned max_blocks = 65536u) {
  const long long blocks = (count + threads - 1) / threads;
  if (blocks < 1) return 1u;
  return blocks > static_cast<long long>(max_blocks) ? max_blocks : static_cast<unsigned>(blocks);
}

}  // namespace tidal::cuda
