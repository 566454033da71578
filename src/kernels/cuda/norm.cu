// RMSNorm kernel: one block per row, a block-wide sum of squares in f32; optionally the residual
// add before it (the fused add_rms_norm), in the same kernel so both round alike.
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/norm_rope_math.cuh"

namespace tidal::cuda {
namespace {

// kAddResidual: residual[row] = bf16(residual + x) first, then the norm reads that rounded sum
// instead of x (exactly add_bf16's rounding, then exactly the plain norm's arithmetic).
template <typename W, bool kAddResidual>
__global__ void rms_norm_kernel(const __nv_bfloat16* x, __nv_bfloat16* residual,
                                const W* __restrict__ weight, int64_t width, float eps,
                                __nv_bfloat16* out) {
  const __nv_bfloat16* x_row = x + blockIdx.x * width;
  __nv_bfloat16* residual_row = kAddResidual ? residual + blockIdx.x * width : nullptr;
  const __nv_bfloat16* row = kAddResidual ? residual_row : x_row;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    if constexpr (kAddResidual) {
      residual_row[i] =
          __float2bfloat16(__bfloat162float(residual_row[i]) + __bfloat162float(x_row[i]));
    }
    sum = sum_square(sum, __bfloat162float(row[i]));
  }
  // Warp reduction, then one partial per warp through shared memory.
  sum = warp_butterfly_sum(sum);
  __shared__ float partials[kNormMaxThreads / 32];
  const int num_warps = static_cast<int>(blockDim.x) / 32;
  if (threadIdx.x % 32 == 0) partials[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = static_cast<int>(threadIdx.x) < num_warps ? partials[threadIdx.x] : 0.0f;
    sum = warp_butterfly_sum(sum);
  }
  __syncthreads();  // every warp has read its partial before thread 0 overwrites partials[0]
  if (threadIdx.x == 0) partials[0] = sum;
  __syncthreads();
  const float inv_rms = rms_norm_inv_rms(partials[0], width, eps);
  __nv_bfloat16* out_row = out + blockIdx.x * width;
  // Each thread rereads only the elements it alone writes, so out == x is safe.
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    out_row[i] = rms_norm_scale(to_float(weight[i]), __bfloat162float(row[i]), inv_rms);
  }
}

template <bool kAddResidual>
cudaError_t launch(const __nv_bfloat16* x, __nv_bfloat16* residual, const void* weight,
                   ElementType weight_type, int64_t num_rows, int64_t width, float eps,
                   __nv_bfloat16* out, cudaStream_t stream) {
  if (num_rows == 0 || width == 0) return cudaSuccess;
  if (num_rows > 0x7fffffff) return cudaErrorInvalidValue;
  const int threads = rms_norm_threads(width);
  return dispatch_element(weight_type, [&](auto tag) {
    using W = decltype(tag);
    rms_norm_kernel<W, kAddResidual><<<static_cast<unsigned>(num_rows), threads, 0, stream>>>(
        x, residual, static_cast<const W*>(weight), width, eps, out);
    return cudaGetLastError();
  });
}

}  // namespace

cudaError_t rms_norm_bf16(const __nv_bfloat16* x, const void* weight, ElementType weight_type,
                          int64_t num_rows, int64_t width, float eps, __nv_bfloat16* out,
                          cudaStream_t stream) {
  return launch<false>(x, nullptr, weight, weight_type, num_rows, width, eps, out, stream);
}

cudaError_t add_rms_norm_bf16(__nv_bfloat16* residual, const __nv_bfloat16* x, const void* weight,
                              ElementType weight_type, int64_t num_rows, int64_t width, float eps,
                              __nv_bfloat16* out, cudaStream_t stream) {
  return launch<true>(x, residual, weight, weight_type, num_rows, width, eps, out, stream);
}

}  // namespace tidal::cuda
