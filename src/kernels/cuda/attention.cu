// Attention kernels: a grid-stride KV store, and paged attention with one block per (token,
// head) whose warps split the keys and merge their online-softmax states at the end. The heads
// of a token are neighbouring blocks, so the query heads that share a KV head (GQA) read its
// keys and values while they are still in L2.
#include <cmath>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/element.cuh"

namespace tidal::cuda {
namespace {

constexpr int kStoreThreads = 256;
// 16 warps split a sequence's keys: a decode step of a few sequences has few blocks, and each
// warp walks its keys one dependent load after another, so latency, not bandwidth, bounds it.
constexpr int kWarps = 16;
constexpr int kDimsPerLane = static_cast<int>(kMaxAttentionHeadDim / 32);

// A thread per (token, column) over the wider of the two rows: column c writes key c and value c
// where each exists, so equal widths (GQA) copy both in one pass, as they always did.
__global__ void store_kv_kernel(const __nv_bfloat16* __restrict__ k,
                                const __nv_bfloat16* __restrict__ v, int64_t num_tokens,
                                const int32_t* __restrict__ slot_mapping, KvStoreTarget target) {
  const int64_t key_width = target.key_width;
  const int64_t value_width = target.value_width;
  const int64_t width = key_width > value_width ? key_width : value_width;
  const int64_t total = num_tokens * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t token = i / width;
    const int64_t column = i % width;
    const int64_t slot = slot_mapping[token];
    if (slot < 0 || slot >= target.num_slots) continue;
    if (column < key_width) target.key[slot * key_width + column] = k[token * key_width + column];
    if (column < value_width) {
      target.value[slot * value_width + column] = v[token * value_width + column];
    }
  }
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

__global__ void __launch_bounds__(kWarps * 32)
    paged_attention_kernel(const PagedAttentionParams p) {
  __shared__ float q_shared[kMaxAttentionHeadDim];
  __shared__ float warp_max[kWarps];
  __shared__ float warp_total[kWarps];
  __shared__ float warp_acc[kWarps][kMaxAttentionHeadDim];

  const int64_t token = blockIdx.x / p.num_heads;
  const int64_t head = blockIdx.x % p.num_heads;
  const int64_t head_dim = p.cache.head_dim;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  __nv_bfloat16* out = p.out + (token * p.num_heads + head) * head_dim;

  // The sequence of this token: the last s with query_start[s] <= token.
  int64_t seq = -1;
  if (p.num_seqs > 0 && token >= p.query_start[0] && token < p.query_start[p.num_seqs]) {
    int64_t lo = 0;
    int64_t hi = p.num_seqs - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (p.query_start[mid] <= token) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    seq = lo;
  }
  int64_t visible = 0;
  if (seq >= 0) {
    const int64_t num_queries = p.query_start[seq + 1] - p.query_start[seq];
    const int64_t context = p.context_lens[seq];
    visible = context - num_queries + (token - p.query_start[seq]) + 1;
    visible = visible > context ? context : visible;
  }
  if (visible <= 0) {
    for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) out[d] = __float2bfloat16(0.0f);
    return;
  }

  const __nv_bfloat16* q = p.q + (token * p.num_heads + head) * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) q_shared[d] = __bfloat162float(q[d]);
  __syncthreads();

  const int64_t kv_head = head / (p.num_heads / p.cache.num_kv_heads);
  const int64_t kv_width = p.cache.num_kv_heads * head_dim;
  const int32_t* blocks = p.block_tables + seq * p.max_blocks_per_seq;
  float running_max = -INFINITY;
  float total = 0.0f;
  float acc[kDimsPerLane];
#pragma unroll
  for (int u = 0; u < kDimsPerLane; ++u) acc[u] = 0.0f;

  for (int64_t j = warp; j < visible; j += kWarps) {
    const int64_t slot = static_cast<int64_t>(blocks[j / p.cache.block_size]) * p.cache.block_size +
                         j % p.cache.block_size;
    const __nv_bfloat16* key = p.cache.key + slot * kv_width + kv_head * head_dim;
    const __nv_bfloat16* value = p.cache.value + slot * kv_width + kv_head * head_dim;
    float partial = 0.0f;
#pragma unroll
    for (int u = 0; u < kDimsPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < head_dim) partial += q_shared[d] * __bfloat162float(key[d]);
    }
    const float score = warp_sum(partial) * p.scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = expf(running_max - new_max);  // 0 on the first key
    const float weight = expf(score - new_max);
    total = total * correction + weight;
#pragma unroll
    for (int u = 0; u < kDimsPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      const float v = d < head_dim ? __bfloat162float(value[d]) : 0.0f;
      acc[u] = acc[u] * correction + weight * v;
    }
    running_max = new_max;
  }

  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_total[warp] = total;
  }
#pragma unroll
  for (int u = 0; u < kDimsPerLane; ++u) {
    const int64_t d = lane + 32 * u;
    if (d < head_dim) warp_acc[warp][d] = acc[u];
  }
  __syncthreads();
  float block_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max[w]);
  float block_total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no key has max -inf and contributes exp(-inf) = 0.
    block_total += warp_total[w] * expf(warp_max[w] - block_max);
  }
  // No visible key at all (a padding sequence of empty context): a zero row, not 0/0.
  const bool empty = block_max == -INFINITY;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps && !empty; ++w)
      sum += warp_acc[w][d] * expf(warp_max[w] - block_max);
    out[d] = __float2bfloat16(empty ? 0.0f : sum / block_total);
  }
}

}  // namespace

cudaError_t store_kv_bf16(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t num_tokens,
                          const int32_t* slot_mapping, const KvStoreTarget& target,
                          cudaStream_t stream) {
  if (target.key_width < 0 || target.value_width < 0) return cudaErrorInvalidValue;
  const int64_t width =
      target.key_width > target.value_width ? target.key_width : target.value_width;
  const int64_t total = num_tokens * width;
  if (total == 0) return cudaSuccess;
  store_kv_kernel<<<grid_for(total, kStoreThreads), kStoreThreads, 0, stream>>>(
      k, v, num_tokens, slot_mapping, target);
  return cudaGetLastError();
}

cudaError_t paged_attention_bf16(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0 || params.num_heads == 0) return cudaSuccess;
  if (params.cache.head_dim > kMaxAttentionHeadDim || params.cache.num_kv_heads <= 0 ||
      params.num_heads % params.cache.num_kv_heads != 0 ||
      params.num_tokens > 0x7fffffff / params.num_heads) {
    return cudaErrorInvalidValue;
  }
  const auto blocks = static_cast<unsigned>(params.num_tokens * params.num_heads);
  paged_attention_kernel<<<blocks, kWarps * 32, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
