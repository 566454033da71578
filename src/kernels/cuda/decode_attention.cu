// GQA decode attention in chunks of 256 keys: every thread scores one key against all of the
// group's query heads (the key row read once, 16 bytes at a time), the chunk's softmax runs per
// head over shared memory, then each warp accumulates P V for its heads with lanes over dims.
#include <cmath>

#include "kernels/cuda/decode_attention.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;  // also the keys per chunk
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDim = 128;
constexpr int kMaxGroup = 16;
constexpr int kDimsPerLane = kMaxDim / 32;

__device__ __forceinline__ float block_reduce_max(float value, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) scratch[warp] = value;
  __syncthreads();
  float result = scratch[0];
  for (int w = 1; w < kWarps; ++w) result = fmaxf(result, scratch[w]);
  __syncthreads();
  return result;
}

__device__ __forceinline__ float block_reduce_sum(float value, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) scratch[warp] = value;
  __syncthreads();
  float result = 0.0f;
  for (int w = 0; w < kWarps; ++w) result += scratch[w];
  __syncthreads();
  return result;
}

__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const PagedAttentionParams p) {
  __shared__ float q_shared[kMaxGroup][kMaxDim];
  __shared__ float prob[kMaxGroup][kThreads];
  __shared__ float running_max[kMaxGroup];
  __shared__ float running_sum[kMaxGroup];
  __shared__ float correction[kMaxGroup];
  __shared__ float reduce_scratch[kWarps];
  __shared__ int64_t key_slot[kThreads];  // the chunk's cache slots, looked up once

  const int64_t kv_head = blockIdx.x;
  const int64_t seq = blockIdx.y;
  const int group = static_cast<int>(p.num_heads / p.cache.num_kv_heads);
  const int head_dim = static_cast<int>(p.cache.head_dim);
  const int64_t token = p.query_start[seq];
  const int64_t context = p.context_lens[seq];
  const int64_t kv_width = p.cache.num_kv_heads * p.cache.head_dim;
  const int32_t* table = p.block_tables + seq * p.max_blocks_per_seq;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int lane = tid % 32;

  const __nv_bfloat16* q = p.q + (token * p.num_heads + kv_head * group) * head_dim;
  for (int i = tid; i < group * kMaxDim; i += kThreads) {
    const int g = i / kMaxDim;
    const int d = i % kMaxDim;
    q_shared[g][d] = d < head_dim ? __bfloat162float(q[g * head_dim + d]) * p.scale : 0.0f;
  }
  if (tid < group) {
    running_max[tid] = -INFINITY;
    running_sum[tid] = 0.0f;
  }
  float acc[kMaxGroup / kWarps][kDimsPerLane];  // this warp's heads w, w + 8; lanes over dims
  for (auto& head : acc) {
    for (float& value : head) value = 0.0f;
  }
  __syncthreads();

  for (int64_t k0 = 0; k0 < context; k0 += kThreads) {
    // Scores: this thread's key against every head of the group.
    const int64_t j = k0 + tid;
    // Loops over heads run to kMaxGroup, unrolled, so score[] and acc[] stay in registers.
    float score[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) score[g] = -INFINITY;
    if (j < context) {
      const int64_t slot =
          static_cast<int64_t>(table[j / p.cache.block_size]) * p.cache.block_size +
          j % p.cache.block_size;
      key_slot[tid] = slot;
      const __nv_bfloat16* key = p.cache.key + slot * kv_width + kv_head * head_dim;
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) score[g] = g < group ? 0.0f : -INFINITY;
      for (int d0 = 0; d0 < head_dim; d0 += 8) {
        const uint4 packed = *reinterpret_cast<const uint4*>(key + d0);
        const __nv_bfloat16* k8 = reinterpret_cast<const __nv_bfloat16*>(&packed);
        float kf[8];
        for (int u = 0; u < 8; ++u) kf[u] = __bfloat162float(k8[u]);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= group) break;
          float partial = 0.0f;
          for (int u = 0; u < 8; ++u) partial += q_shared[g][d0 + u] * kf[u];
          score[g] += partial;
        }
      }
    }
    // The chunk's softmax, head by head: new running max, the old sum's correction, P.
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) break;  // the same for every thread: the reductions stay matched
      const float chunk_max = block_reduce_max(score[g], reduce_scratch);
      const float old_max = running_max[g];
      const float new_max = fmaxf(old_max, chunk_max);  // finite: every chunk has a key
      const float value = j < context ? expf(score[g] - new_max) : 0.0f;
      prob[g][tid] = value;
      const float chunk_sum = block_reduce_sum(value, reduce_scratch);
      if (tid == 0) {
        const float scale_old = expf(old_max - new_max);  // 0 on the first chunk
        correction[g] = scale_old;
        running_sum[g] = running_sum[g] * scale_old + chunk_sum;
        running_max[g] = new_max;
      }
    }
    __syncthreads();
    // P V: warp w takes heads w and w + 8; lane l takes dims l, l + 32, ...
    const int64_t keys = context - k0 < kThreads ? context - k0 : kThreads;
#pragma unroll
    for (int h = 0; h < kMaxGroup / kWarps; ++h) {
      const int g = warp + h * kWarps;
      if (g >= group) break;
      const float scale_old = correction[g];
      for (float& value : acc[h]) value *= scale_old;
#pragma unroll 8
      for (int64_t i = 0; i < keys; ++i) {
        // The slot comes from shared memory, so the value loads of successive keys do not wait
        // on each other's page-table reads and can all be in flight at once.
        const __nv_bfloat16* value = p.cache.value + key_slot[i] * kv_width + kv_head * head_dim;
        const float weight = prob[g][i];
        for (int u = 0; u < kDimsPerLane; ++u) {
          const int d = lane + 32 * u;
          if (d < head_dim) acc[h][u] += weight * __bfloat162float(value[d]);
        }
      }
    }
    __syncthreads();  // prob and correction are rewritten by the next chunk
  }

#pragma unroll
  for (int h = 0; h < kMaxGroup / kWarps; ++h) {
    const int g = warp + h * kWarps;
    if (g >= group) break;
    const float total = running_sum[g];
    __nv_bfloat16* out = p.out + (token * p.num_heads + kv_head * group + g) * head_dim;
    for (int u = 0; u < kDimsPerLane; ++u) {
      const int d = lane + 32 * u;
      if (d < head_dim) out[d] = __float2bfloat16(total > 0.0f ? acc[h][u] / total : 0.0f);
    }
  }
}

}  // namespace

bool decode_attention_supports(const PagedAttentionParams& params, int64_t max_query_len) {
  return max_query_len == 1 && params.num_tokens == params.num_seqs &&
         params.cache.num_kv_heads > 0 && params.num_heads % params.cache.num_kv_heads == 0 &&
         params.num_heads / params.cache.num_kv_heads <= kMaxGroup &&
         params.cache.head_dim % 8 == 0 && params.cache.head_dim <= kMaxDim;
}

cudaError_t decode_attention_bf16(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_seqs == 0 || params.num_heads == 0) return cudaSuccess;
  if (params.num_seqs > 65535 || params.cache.num_kv_heads > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(params.cache.num_kv_heads),
                  static_cast<unsigned>(params.num_seqs));
  decode_attention_kernel<<<grid, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
