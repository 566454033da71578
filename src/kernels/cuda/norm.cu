// RMSNorm kernel: one block per row, a block-wide sum of squares in f32.
#include "kernels/cuda/norm.cuh"

namespace tidal::cuda {
namespace {

constexpr int kMaxThreads = 256;

template <typename W>
__global__ void rms_norm_kernel(const __nv_bfloat16* x, const W* __restrict__ weight, int64_t width,
                                float eps, __nv_bfloat16* out) {
  const __nv_bfloat16* row = x + blockIdx.x * width;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float value = __bfloat162float(row[i]);
    sum += value * value;
  }
  // Warp reduction, then one partial per warp through shared memory.
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ float partials[kMaxThreads / 32];
  const int num_warps = static_cast<int>(blockDim.x) / 32;
  if (threadIdx.x % 32 == 0) partials[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = static_cast<int>(threadIdx.x) < num_warps ? partials[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  }
  __syncthreads();  // every warp has read its partial before thread 0 overwrites partials[0]
  if (threadIdx.x == 0) partials[0] = sum;
  __syncthreads();
  const float inv_rms = rsqrtf(partials[0] / static_cast<float>(width) + eps);
  __nv_bfloat16* out_row = out + blockIdx.x * width;
  // Each thread rereads only the elements it alone writes, so out == x is safe.
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    out_row[i] = __float2bfloat16(to_float(weight[i]) * (__bfloat162float(row[i]) * inv_rms));
  }
}

}  // namespace

cudaError_t rms_norm_bf16(const __nv_bfloat16* x, const void* weight, ElementType weight_type,
                          int64_t num_rows, int64_t width, float eps, __nv_bfloat16* out,
                          cudaStream_t stream) {
  if (num_rows == 0 || width == 0) return cudaSuccess;
  if (num_rows > 0x7fffffff) return cudaErrorInvalidValue;
  // Narrow rows (per-head norms of 64-256) get one or a few warps instead of idle threads.
  int threads = 32;
  while (threads < kMaxThreads && threads < width) threads *= 2;
  return dispatch_element(weight_type, [&](auto tag) {
    using W = decltype(tag);
    rms_norm_kernel<W><<<static_cast<unsigned>(num_rows), threads, 0, stream>>>(
        x, static_cast<const W*>(weight), width, eps, out);
    return cudaGetLastError();
  });
}

}  // namespace tidal::cuda
