// Rotary embedding kernels: the plain one with a thread per (token, head, rotation pair), and the
// fused q/k norm + RoPE + KV store with a block per token. They live in one file so both call the
// same compiled angle function (rope_cos_sin), and so round alike. The interleaved-pair rotation of
// DeepSeek's MLA (given inverse frequencies) is here too, a thread per pair.
#include <algorithm>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/norm_rope_math.cuh"
#include "kernels/cuda/rope.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;
// Warps of a qk_norm_rope_store block, one head each: a token's heads spread over several blocks
// (36 heads of Qwen3-30B-A3B: 9 blocks), so even one token fills several SMs.
constexpr int kFusedMaxWarps = 4;
// rms_norm_bf16's warps for a row of up to kMaxAttentionHeadDim: the fused kernel's chunks.
constexpr int kMaxChunks = kNormMaxThreads / 32;
static_assert(kMaxAttentionHeadDim <= kNormMaxThreads,
              "rms_norm_bf16 must give a head one element per thread");

// Pair i's (cos, sin) at `position`, in the CPU reference's order of f32 operations:
// inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq. Never inlined: the library's powf and
// sincosf leave the compiler free to contract some of their multiply-adds, which it might do
// differently inside different kernels; one compiled copy for both kernels rules that out.
__device__ __noinline__ float2 rope_cos_sin(int32_t position, int64_t i, int64_t head_dim,
                                            float theta) {
  const float inv_freq =
      1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  const float angle = static_cast<float>(position) * inv_freq;
  float2 cos_sin;
  sincosf(angle, &cos_sin.y, &cos_sin.x);
  return cos_sin;
}

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
    const float2 cos_sin = rope_cos_sin(positions[token], i, head_dim, theta);
    const float first = __bfloat162float(row[i]);
    const float second = __bfloat162float(row[i + half]);
    rope_rotate(first, second, cos_sin.x, cos_sin.y, &row[i], &row[i + half]);
  }
}

// Pair i of (token, head) is x[2i], x[2i + 1]: rotated by positions[token] * inv_freq[i] (one f32
// multiply, kept out of sincosf's own multiply-adds) and scaled by `factor`.
__global__ void rope_pairs_kernel(__nv_bfloat16* x, const int32_t* __restrict__ positions,
                                  const float* __restrict__ inv_freq, int64_t num_tokens,
                                  int64_t num_heads, int64_t half, float factor) {
  const int64_t total = num_tokens * num_heads * half;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = index % half;
    const int64_t token = index / (half * num_heads);
    const float angle = __fmul_rn(static_cast<float>(positions[token]), inv_freq[i]);
    float sine;
    float cosine;
    sincosf(angle, &sine, &cosine);
    __nv_bfloat16* pair = x + 2 * index;  // (token, head, i) is pair `index` of the tensor
    rope_rotate(__bfloat162float(pair[0]), __bfloat162float(pair[1]), __fmul_rn(cosine, factor),
                __fmul_rn(sine, factor), &pair[0], &pair[1]);
  }
}

// Blocks (token, head group); a block's warps take the group's q and k heads in turn. rms_norm_bf16
// on a row of head_dim runs rms_norm_threads(head_dim) threads, thread j holding element j (or
// nothing), sums each warp's squares by a butterfly, then the warps' partials (zeros past the last
// warp) by another. Here chunk c of 32 elements stands for its warp c: the same sums in the same
// order within one warp, so the same bits. Then the rotation (pairs cross lanes: through shared
// memory), then the KV store of the rotated k and of v.
template <typename W>
__global__ void __launch_bounds__(kFusedMaxWarps * 32)
    qk_norm_rope_store_kernel(QkNormRopeStoreParams p, float theta, int num_chunks) {
  __shared__ float cosines[kMaxAttentionHeadDim / 2];
  __shared__ float sines[kMaxAttentionHeadDim / 2];
  __shared__ __nv_bfloat16 normed[kFusedMaxWarps][kMaxAttentionHeadDim];

  const int64_t token = blockIdx.x;
  const int64_t head_dim = p.cache.head_dim;
  const int64_t half = head_dim / 2;
  // The token's angles, shared by its heads (rope_kernel computes the same ones per head).
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float2 cos_sin = rope_cos_sin(p.positions[token], i, head_dim, theta);
    cosines[i] = cos_sin.x;
    sines[i] = cos_sin.y;
  }
  __syncthreads();

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int num_warps = static_cast<int>(blockDim.x) / 32;
  const int64_t num_kv_heads = p.cache.num_kv_heads;
  const int64_t kv_width = num_kv_heads * head_dim;
  const int64_t slot = p.slot_mapping[token];
  const bool store = slot >= 0 && slot < p.cache.num_blocks * p.cache.block_size;
  __nv_bfloat16* buffer = normed[warp];
  const int64_t head_stride = static_cast<int64_t>(num_warps) * gridDim.y;
  for (int64_t head = static_cast<int64_t>(blockIdx.y) * num_warps + warp;
       head < p.num_heads + num_kv_heads; head += head_stride) {
    const bool is_q = head < p.num_heads;
    const int64_t kv_head = head - p.num_heads;
    __nv_bfloat16* row = is_q ? p.q + (token * p.num_heads + head) * head_dim
                              : p.k + token * kv_width + kv_head * head_dim;
    const W* weight = static_cast<const W*>(is_q ? p.q_norm : p.k_norm);

    float values[kMaxChunks];
    float partial = 0.0f;  // lane c: chunk c's sum; lanes past the chunks keep 0
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      values[c] = 0.0f;
      if (c < num_chunks) {  // the same for the whole warp
        const int64_t e = c * 32 + lane;
        float sum = 0.0f;
        if (e < head_dim) {
          values[c] = __bfloat162float(row[e]);
          sum = sum_square(sum, values[c]);
        }
        sum = warp_butterfly_sum(sum);
        if (lane == c) partial = sum;
      }
    }
    // rms_norm_bf16 takes thread 0's total; every lane holds the same one, lane 0's is taken.
    const float total = __shfl_sync(0xffffffffu, warp_butterfly_sum(partial), 0);
    const float inv_rms = rms_norm_inv_rms(total, head_dim, p.eps);
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      const int64_t e = c * 32 + lane;
      if (c < num_chunks && e < head_dim) {
        buffer[e] = rms_norm_scale(to_float(weight[e]), values[c], inv_rms);
      }
    }
    __syncwarp();

    __nv_bfloat16* key =
        store && !is_q ? p.cache.key + slot * kv_width + kv_head * head_dim : nullptr;
    for (int64_t i = lane; i < half; i += 32) {
      __nv_bfloat16 out_first;
      __nv_bfloat16 out_second;
      rope_rotate(__bfloat162float(buffer[i]), __bfloat162float(buffer[i + half]), cosines[i],
                  sines[i], &out_first, &out_second);
      row[i] = out_first;
      row[i + half] = out_second;
      if (key != nullptr) {
        key[i] = out_first;
        key[i + half] = out_second;
      }
    }
    if (key != nullptr) {
      const __nv_bfloat16* v_row = p.v + token * kv_width + kv_head * head_dim;
      __nv_bfloat16* value = p.cache.value + slot * kv_width + kv_head * head_dim;
      for (int64_t e = lane; e < head_dim; e += 32) value[e] = v_row[e];
    }
    __syncwarp();  // every lane has read the buffer before the next head overwrites it
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

cudaError_t rope_pairs_bf16(__nv_bfloat16* x, const int32_t* positions, const float* inv_freq,
                            int64_t num_tokens, int64_t num_heads, int64_t dim, float factor,
                            cudaStream_t stream) {
  const int64_t total = num_tokens * num_heads * (dim / 2);
  if (total == 0) return cudaSuccess;
  if (dim % 2 != 0) return cudaErrorInvalidValue;
  rope_pairs_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      x, positions, inv_freq, num_tokens, num_heads, dim / 2, factor);
  return cudaGetLastError();
}

cudaError_t qk_norm_rope_store_bf16(const QkNormRopeStoreParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0) return cudaSuccess;
  const int64_t head_dim = params.cache.head_dim;
  const int64_t heads = params.num_heads + params.cache.num_kv_heads;
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > kMaxAttentionHeadDim || heads <= 0 ||
      params.num_heads < 0 || params.cache.num_kv_heads < 0 || params.num_tokens > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  const int warps = static_cast<int>(std::min<int64_t>(heads, kFusedMaxWarps));
  const int64_t groups = std::min<int64_t>((heads + warps - 1) / warps, 65535);
  const dim3 grid(static_cast<unsigned>(params.num_tokens), static_cast<unsigned>(groups));
  const int num_chunks = rms_norm_threads(head_dim) / 32;
  return dispatch_element(params.norm_type, [&](auto tag) {
    using W = decltype(tag);
    qk_norm_rope_store_kernel<W>
        <<<grid, warps * 32, 0, stream>>>(params, static_cast<float>(params.theta), num_chunks);
    return cudaGetLastError();
  });
}

}  // namespace tidal::cuda
