// SwiGLU kernel: a grid-stride loop over every output element, f32 math.
#include "kernels/cuda/activation.cuh"

namespace tidal::cuda {
namespace {

__global__ void silu_and_mul_kernel(const __nv_bfloat16* __restrict__ gate_up, int64_t num_tokens,
                                    int64_t width, __nv_bfloat16* __restrict__ out) {
  const int64_t total = num_tokens * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t token = i / width;
    const int64_t column = i % width;
    const float gate = __bfloat162float(gate_up[token * 2 * width + column]);
    const float up = __bfloat162float(gate_up[token * 2 * width + width + column]);
    out[i] = __float2bfloat16(gate / (1.0f + __expf(-gate)) * up);
  }
}

}  // namespace

cudaError_t silu_and_mul_bf16(const __nv_bfloat16* gate_up, int64_t num_tokens, int64_t width,
                              __nv_bfloat16* out, cudaStream_t stream) {
  const int64_t total = num_tokens * width;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const auto blocks = static_cast<unsigned>(
      (total + threads - 1) / threads < 4096 ? (total + threads - 1) / threads : 4096);
  silu_and_mul_kernel<<<blocks, threads, 0, stream>>>(gate_up, num_tokens, width, out);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
