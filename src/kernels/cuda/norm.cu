// RMSNorm kernel: one block per row, a block-wide sum of squares in f32.
#include "kernels/cuda/norm.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rms_norm_kernel(const __nv_bfloat16* __restrict__ x,
                                const __nv_bfloat16* __restrict__ weight, int64_t width, float eps,
                                __nv_bfloat16* out) {
  const __nv_bfloat16* row = x + blockIdx.x * width;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float value = __bfloat162float(row[i]);
    sum += value * value;
  }
  // Warp reduction, then one partial per warp through shared memory.
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ float partials[kThreads / 32];
  if (threadIdx.x % 32 == 0) partials[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? partials[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) partials[0] = sum;
  }
  __syncthreads();
  const float inv_rms = rsqrtf(partials[0] / static_cast<float>(width) + eps);
  __nv_bfloat16* out_row = out + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    // Hugging Face rounds the normalised value to the activation dtype before the weight.
    const float normed = __bfloat162float(__float2bfloat16(__bfloat162float(row[i]) * inv_rms));
    out_row[i] = __float2bfloat16(__bfloat162float(weight[i]) * normed);
  }
}

}  // namespace

cudaError_t rms_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* weight, int64_t num_rows,
                          int64_t width, float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (num_rows == 0) return cudaSuccess;
  rms_norm_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(x, weight, width, eps,
                                                                            out);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
