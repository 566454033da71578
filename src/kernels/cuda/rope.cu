// Rotary embedding kernel: one thread per (token, head, rotation pair), q and k heads together.
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/rope.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(__nv_bfloat16* q, __nv_bfloat16* k,
                            const int32_t* __restrict__ positions, int64_t num_tokens,
                            int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                            float theta) {
  const int64_t half = head_dim / 2;
  const int64_t heads = num_heads + num_kv_heads;
  const int64_t total = num_tokens * heads * half;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = index % half;
    const int64_t head = (index / half) % heads;
    const int64_t token = index / (half * heads);
    __nv_bfloat16* row = head < num_heads
                             ? q + (token * num_heads + head) * head_dim
                             : k + (token * num_kv_heads + (head - num_heads)) * head_dim;
    // The CPU reference's order of f32 operations: inv_freq = 1 / theta^(2i/d), angle = pos * f.
    const float inv_freq =
        1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(positions[token]) * inv_freq;
    float sine = 0.0f;
    float cosine = 0.0f;
    sincosf(angle, &sine, &cosine);
    const float first = __bfloat162float(row[i]);
    const float second = __bfloat162float(row[i + half]);
    row[i] = __float2bfloat16(first * cosine - second * sine);
    row[i + half] = __float2bfloat16(second * cosine + first * sine);
  }
}

}  // namespace

cudaError_t rope_bf16(__nv_bfloat16* q, __nv_bfloat16* k, const int32_t* positions,
                      int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                      double theta, cudaStream_t stream) {
  const int64_t total = num_tokens * (num_heads + num_kv_heads) * (head_dim / 2);
  if (total == 0) return cudaSuccess;
  rope_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      q, k, positions, num_tokens, num_heads, num_kv_heads, head_dim, static_cast<float>(theta));
  return cudaGetLastError();
}

}  // namespace tidal::cuda
