// The uniform fill: a grid-stride loop, one counter-based draw per element.
#include "common/counter_random.h"
#include "kernels/cuda/random_fill.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void store_rounded(float* out, float value) {
  *out = value;
}
__device__ __forceinline__ void store_rounded(__half* out, float value) {
  *out = __float2half_rn(value);
}
__device__ __forceinline__ void store_rounded(__nv_bfloat16* out, float value) {
  *out = __float2bfloat16_rn(value);
}

template <typename T>
__global__ void random_fill_kernel(T* __restrict__ data, int64_t count, uint64_t seed,
                                   uint64_t first_index, float center, float step) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t ticks = counter_random::ticks(seed, first_index + static_cast<uint64_t>(i));
    // __fadd_rn/__fmul_rn are never contracted: the same single rounding as the CPU.
    store_rounded(data + i, __fadd_rn(center, __fmul_rn(static_cast<float>(ticks), step)));
  }
}

}  // namespace

cudaError_t random_fill(void* data, ElementType type, int64_t count, uint64_t seed,
                        int64_t first_index, float center, float step, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return dispatch_element(type, [&](auto tag) {
    using T = decltype(tag);
    random_fill_kernel<T><<<grid_for(count, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(data), count, seed, static_cast<uint64_t>(first_index), center, step);
    return cudaGetLastError();
  });
}

}  // namespace tidal::cuda
