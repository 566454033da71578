// Split-KV decode attention on the tensor cores. A block of 4 warps takes one split (up to
// split_keys keys) of one (sequence, KV head); each warp walks 16-key tiles of it (tiles w,
// w + 4, ...), loading the next tile's keys and values into registers while it computes this one,
// and the page-table entries of the tile after that.
//
// Per tile a warp computes S^T = K Q^T with mma.m16n8k16 (16 keys x 8 heads of the group), an
// online softmax per head in f32, and O^T += V^T P^T (head_dim x 8 heads). The operands come
// straight from 16-byte global loads: a dot product visits the dimensions in any order, so the
// mma's k index is mapped to whichever dimensions the loading thread holds, and the output
// dimensions of P V are permuted the same way when stored. P enters the mma as bf16 hi + lo (two
// products), which keeps P V as accurate as f32. The block then merges its warps' states, and
// either writes the output (a sequence that fits one split) or a normalised partial and its
// log-sum-exp, which merge_kernel combines.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/decode_attention.cuh"

namespace tidal::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 16;
constexpr int kSplitGranule = kWarps * kTileKeys;  // a tile for every warp
// Two tiles a warp at least: a split's fixed cost (the context length, the first table read and
// loads, the merge) then buys some streaming.
constexpr int kMinSplitKeys = 2 * kSplitGranule;
// Blocks a launch aims for. An H200 holds ~264 of them at once (2 per SM); on it, splitting
// further only added merge work and per-split latency (measured at batch 1 to 256, contexts 1K
// to 32K). It also bounds the partials (num_seqs num_kv_heads num_splits <= kTargetBlocks), so
// the workspace depends on neither the batch nor the context.
constexpr int64_t kTargetBlocks = 256;
constexpr int kMaxGroup = 16;
constexpr int kMaxDim = 128;
constexpr int kMergeWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;

struct SplitPlan {
  int split_keys = kMinSplitKeys;
  int num_splits = 1;
};

struct SplitArgs {
  PagedAttentionParams p;
  SplitPlan plan;
  float* part_out = nullptr;  // [num_seqs, num_heads, num_splits, head_dim], normalised
  float* part_lse = nullptr;  // [num_seqs, num_heads, num_splits], log2 units
};

// Splits sized from the bucket-fixed shape only: at most kTargetBlocks (sequence, KV head, split)
// blocks for the widest context the block table holds.
SplitPlan plan_splits(const PagedAttentionParams& p) {
  const int64_t max_keys = std::max<int64_t>(1, p.max_blocks_per_seq * p.cache.block_size);
  const int64_t pairs = std::max<int64_t>(1, p.num_seqs * p.cache.num_kv_heads);
  const int64_t want_splits = std::max<int64_t>(1, kTargetBlocks / pairs);
  int64_t split_keys = (max_keys + want_splits - 1) / want_splits;
  split_keys = std::max<int64_t>(kMinSplitKeys,
                                 (split_keys + kSplitGranule - 1) / kSplitGranule * kSplitGranule);
  SplitPlan plan;
  plan.split_keys = static_cast<int>(split_keys);
  plan.num_splits = static_cast<int>((max_keys + split_keys - 1) / split_keys);
  return plan;
}

// Room for the partials of any plan_splits() plan: num_seqs num_heads num_splits <= group
// kTargetBlocks. The same for every batch and context, so the scratch sized by the first decode
// step serves every later one, captured in a graph or not.
size_t workspace_bytes(const PagedAttentionParams& p) {
  if (p.num_seqs == 0 || p.cache.num_kv_heads <= 0) return 0;
  const int64_t group = p.num_heads / p.cache.num_kv_heads;
  return static_cast<size_t>(group * kTargetBlocks * (p.cache.head_dim + 1)) * sizeof(float);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// An 8x8 bf16 matrix held as an mma fragment (lane l: row l / 4, columns 2 (l % 4) and the next),
// transposed in place across the warp.
__device__ __forceinline__ uint32_t transpose_8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

__device__ __forceinline__ uint32_t bits(__nv_bfloat162 value) {
  return *reinterpret_cast<const uint32_t*>(&value);
}

// 16 bytes of the KV cache (read-only while the kernel runs).
__device__ __forceinline__ uint4 load_cache(const __nv_bfloat16* ptr) {
  return __ldg(reinterpret_cast<const uint4*>(ptr));
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

// kHeadTiles tiles of 8 query heads (group <= 8 kHeadTiles), kDimHalves halves of 64 dimensions
// (head_dim <= 64 kDimHalves). Lane l of a warp is (g, t) = (l / 4, l % 4) in the mma fragments.
// Keys: thread (g, t) loads tile keys g and g + 8, chunks t, t + 4, ... (8 dims a chunk); chunk
// t + 4i gives k-steps 2i (elements 0-3) and 2i + 1 (elements 4-7). Values: it loads tile keys
// 2t, 2t + 1, 2t + 8, 2t + 9, chunks g and g + 8; output tile (h, e) maps its row g to dimension
// 8 (g + 8h) + e and row g + 8 to 8 (g + 8h) + 4 + e.
template <int kHeadTiles, int kDimHalves>
__global__ void __launch_bounds__(kThreads) split_kernel(const SplitArgs args) {
  constexpr int kHeads = 8 * kHeadTiles;
  constexpr int kDim = 64 * kDimHalves;
  constexpr int kKeyChunks = 2 * kDimHalves;  // per thread and key, on the K side
  constexpr int kOutTiles = 4 * kDimHalves;
  __shared__ float warp_max[kWarps][kHeads];
  __shared__ float warp_sum[kWarps][kHeads];
  __shared__ float warp_weight[kWarps][kHeads];
  __shared__ float head_lse[kHeads];
  __shared__ float warp_out[kWarps][kHeads][kDim];

  const PagedAttentionParams& p = args.p;
  const int split_keys = args.plan.split_keys;
  const int num_splits = args.plan.num_splits;
  const int64_t seq = blockIdx.x / (num_splits * p.cache.num_kv_heads);
  const int64_t kv_head = blockIdx.x / num_splits % p.cache.num_kv_heads;
  const int split = static_cast<int>(blockIdx.x % num_splits);
  const int64_t context = p.context_lens[seq];
  const int64_t key_begin = static_cast<int64_t>(split) * split_keys;
  if (split > 0 && key_begin >= context) return;  // past this sequence's context
  const int64_t remaining = context - key_begin;
  const int keys =
      static_cast<int>(remaining < 0 ? 0 : (remaining < split_keys ? remaining : split_keys));
  const bool direct = num_splits == 1 || context <= split_keys;  // split 0 writes the output
  const int group = static_cast<int>(p.num_heads / p.cache.num_kv_heads);
  const int head_dim = static_cast<int>(p.cache.head_dim);
  const int64_t first_head = kv_head * group;
  // One token per sequence: token s is sequence s's (query_start is 0, 1, ..., num_seqs).
  const int64_t token = seq;
  const int tid = static_cast<int>(threadIdx.x);
  __nv_bfloat16* out = p.out + (token * p.num_heads + first_head) * head_dim;
  if (keys == 0) {  // an empty sequence: a zero row, as paged_attention_bf16 writes
    for (int i = tid; i < group * head_dim; i += kThreads) out[i] = __float2bfloat16(0.0f);
    return;
  }

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const int num_chunks = head_dim / 8;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 q[kHeadTiles][kKeyChunks];
#pragma unroll
  for (int ht = 0; ht < kHeadTiles; ++ht) {
    const int head = ht * 8 + g;
    const __nv_bfloat16* row = p.q + (token * p.num_heads + first_head + head) * head_dim;
#pragma unroll
    for (int i = 0; i < kKeyChunks; ++i) {
      const int chunk = t + 4 * i;
      q[ht][i] = head < group && chunk < num_chunks
                     ? __ldg(reinterpret_cast<const uint4*>(row + 8 * chunk))
                     : zero;
    }
  }
  float acc[kHeadTiles][kOutTiles][4];
  float row_max[kHeadTiles][2];  // heads 2t and 2t + 1 of each head tile, log2 units
  float row_sum[kHeadTiles][2];  // over this thread's keys only, until the end
#pragma unroll
  for (int ht = 0; ht < kHeadTiles; ++ht) {
#pragma unroll
    for (int m = 0; m < kOutTiles; ++m) {
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[ht][m][c] = 0.0f;
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      row_max[ht][c] = -INFINITY;
      row_sum[ht][c] = 0.0f;
    }
  }

  const int64_t kv_width = p.cache.num_kv_heads * p.cache.head_dim;
  const __nv_bfloat16* key_base = p.cache.key + kv_head * head_dim;
  const __nv_bfloat16* value_base = p.cache.value + kv_head * head_dim;
  // Lane l looks up the cache slot of the tile's key l % 16. Keys past the split's end read the
  // split's last key instead (their probabilities are 0), so every load is unconditional and
  // reads finite cache contents.
  const int32_t* table = p.block_tables + seq * p.max_blocks_per_seq;
  const auto block_size = static_cast<int32_t>(p.cache.block_size);
  const auto lane_slot = [&](int tile) {
    const int key = min(tile * kTileKeys + lane % kTileKeys, keys - 1);
    const int32_t j = static_cast<int32_t>(key_begin) + key;
    return table[j / block_size] * block_size + j % block_size;
  };
  // Chunks past head_dim read chunk 0 again: the query is 0 there, and those output dimensions
  // are never stored.
  const auto chunk_offset = [&](int chunk) { return chunk < num_chunks ? 8 * chunk : 0; };
  // A tile's keys and values as this thread's fragments (`slot`: lane_slot(tile)).
  const auto load_tile = [&](int32_t slot, uint4(&k)[2][kKeyChunks], uint4(&v)[4][kDimHalves]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row_slot = __shfl_sync(0xffffffffu, slot, g + 8 * r);
      const __nv_bfloat16* row = key_base + row_slot * kv_width;
#pragma unroll
      for (int i = 0; i < kKeyChunks; ++i) {
        k[r][i] = load_cache(row + chunk_offset(t + 4 * i));
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t row_slot = __shfl_sync(0xffffffffu, slot, 2 * t + (r & 1) + 8 * (r >> 1));
      const __nv_bfloat16* row = value_base + row_slot * kv_width;
#pragma unroll
      for (int h = 0; h < kDimHalves; ++h) {
        v[r][h] = load_cache(row + chunk_offset(g + 8 * h));
      }
    }
  };

  const float score_scale = p.scale * kLog2e;
  const auto compute_tile = [&](int tile, const uint4(&k)[2][kKeyChunks],
                                const uint4(&v)[4][kDimHalves]) {
    const bool valid_low = tile * kTileKeys + g < keys;
    const bool valid_high = tile * kTileKeys + g + 8 < keys;
#pragma unroll
    for (int ht = 0; ht < kHeadTiles; ++ht) {
      // s: (key g, head 2t), (key g, head 2t + 1), (key g + 8, head 2t), (key g + 8, head 2t + 1)
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kKeyChunks; ++i) {
        mma_bf16(s, k[0][i].x, k[1][i].x, k[0][i].y, k[1][i].y, q[ht][i].x, q[ht][i].y);
        mma_bf16(s, k[0][i].z, k[1][i].z, k[0][i].w, k[1][i].w, q[ht][i].z, q[ht][i].w);
      }
      float prob[4];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float low = valid_low ? s[c] * score_scale : -INFINITY;
        const float high = valid_high ? s[c + 2] * score_scale : -INFINITY;
        float tile_max = fmaxf(low, high);
#pragma unroll
        for (int offset = 4; offset < 32; offset *= 2) {
          tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
        }
        // Finite: the tile's first key is valid. The old max is -inf before the first tile.
        const float new_max = fmaxf(row_max[ht][c], tile_max);
        const float correction = exp2f(row_max[ht][c] - new_max);
        row_max[ht][c] = new_max;
        prob[c] = exp2f(low - new_max);
        prob[c + 2] = exp2f(high - new_max);
        row_sum[ht][c] = row_sum[ht][c] * correction + prob[c] + prob[c + 2];
#pragma unroll
        for (int m = 0; m < kOutTiles; ++m) {
          acc[ht][m][c] *= correction;
          acc[ht][m][c + 2] *= correction;
        }
      }
      // P^T as the mma's B operand (keys x heads): the transposes of the (keys x heads) 8x8
      // blocks this thread holds, for P rounded to bf16 and for the remainder.
      const __nv_bfloat162 high0 = __floats2bfloat162_rn(prob[0], prob[1]);
      const __nv_bfloat162 high1 = __floats2bfloat162_rn(prob[2], prob[3]);
      const __nv_bfloat162 low0 =
          __floats2bfloat162_rn(prob[0] - __low2float(high0), prob[1] - __high2float(high0));
      const __nv_bfloat162 low1 =
          __floats2bfloat162_rn(prob[2] - __low2float(high1), prob[3] - __high2float(high1));
      const uint32_t b_high0 = transpose_8x8(bits(high0));
      const uint32_t b_high1 = transpose_8x8(bits(high1));
      const uint32_t b_low0 = transpose_8x8(bits(low0));
      const uint32_t b_low1 = transpose_8x8(bits(low1));
#pragma unroll
      for (int h = 0; h < kDimHalves; ++h) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // Element e (rows g) and 4 + e (rows g + 8) of the chunk, for keys (2t, 2t + 1) and
          // (2t + 8, 2t + 9).
          const unsigned select = e % 2 == 0 ? 0x5410u : 0x7632u;
          const uint32_t a0 = __byte_perm(word(v[0][h], e / 2), word(v[1][h], e / 2), select);
          const uint32_t a1 =
              __byte_perm(word(v[0][h], 2 + e / 2), word(v[1][h], 2 + e / 2), select);
          const uint32_t a2 = __byte_perm(word(v[2][h], e / 2), word(v[3][h], e / 2), select);
          const uint32_t a3 =
              __byte_perm(word(v[2][h], 2 + e / 2), word(v[3][h], 2 + e / 2), select);
          mma_bf16(acc[ht][h * 4 + e], a0, a1, a2, a3, b_high0, b_high1);
          mma_bf16(acc[ht][h * 4 + e], a0, a1, a2, a3, b_low0, b_low1);
        }
      }
    }
  };

  // Two register buffers: a tile computes from one while the next tile's loads fill the other
  // (copying registers instead would wait for those loads), and the table read for the tile
  // after that is in flight too.
  const int num_tiles = (keys + kTileKeys - 1) / kTileKeys;
  uint4 k_even[2][kKeyChunks];
  uint4 v_even[4][kDimHalves];
  uint4 k_odd[2][kKeyChunks];
  uint4 v_odd[4][kDimHalves];
  load_tile(lane_slot(warp), k_even, v_even);
  int32_t slot_next = lane_slot(warp + kWarps);
  const auto step = [&](int tile, const uint4(&k)[2][kKeyChunks], const uint4(&v)[4][kDimHalves],
                        uint4(&k_next)[2][kKeyChunks], uint4(&v_next)[4][kDimHalves]) {
    const int32_t slot_after = lane_slot(tile + 2 * kWarps);
    load_tile(slot_next, k_next, v_next);
    compute_tile(tile, k, v);
    slot_next = slot_after;
  };
  for (int tile = warp; tile < num_tiles; tile += 2 * kWarps) {
    step(tile, k_even, v_even, k_odd, v_odd);
    if (tile + kWarps >= num_tiles) break;
    step(tile + kWarps, k_odd, v_odd, k_even, v_even);
  }

  // The warps' states into shared memory; a warp without keys has max -inf and weighs nothing.
#pragma unroll
  for (int ht = 0; ht < kHeadTiles; ++ht) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      float sum = row_sum[ht][c];
#pragma unroll
      for (int offset = 4; offset < 32; offset *= 2) {
        sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      }
      const int head = ht * 8 + 2 * t + c;
      if (g == 0) {
        warp_max[warp][head] = row_max[ht][c];
        warp_sum[warp][head] = sum;
      }
#pragma unroll
      for (int h = 0; h < kDimHalves; ++h) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          warp_out[warp][head][8 * (g + 8 * h) + e] = acc[ht][h * 4 + e][c];
          warp_out[warp][head][8 * (g + 8 * h) + 4 + e] = acc[ht][h * 4 + e][c + 2];
        }
      }
    }
  }
  __syncthreads();
  if (tid < kHeads) {
    float block_max = -INFINITY;
    for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max[w][tid]);
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w)
      total += warp_sum[w][tid] * exp2f(warp_max[w][tid] - block_max);
    for (int w = 0; w < kWarps; ++w) {
      warp_weight[w][tid] = exp2f(warp_max[w][tid] - block_max) / total;
    }
    head_lse[tid] = block_max + log2f(total);
  }
  __syncthreads();
  const int64_t part = (seq * p.num_heads + first_head) * num_splits + split;
  for (int i = tid; i < group * head_dim; i += kThreads) {
    const int head = i / head_dim;
    const int d = i % head_dim;
    float value = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) value += warp_out[w][head][d] * warp_weight[w][head];
    if (direct) {
      out[i] = __float2bfloat16(value);
    } else {
      args.part_out[(part + static_cast<int64_t>(head) * num_splits) * head_dim + d] = value;
    }
  }
  if (!direct && tid < group)
    args.part_lse[part + static_cast<int64_t>(tid) * num_splits] = head_lse[tid];
}

// One warp per (sequence, head): the splits' partials weighted by their share of the softmax
// sum. Lane l owns dimensions 4l to 4l + 3. Sequences that fit one split were written already.
__global__ void __launch_bounds__(kMergeWarps * 32) merge_kernel(const SplitArgs args) {
  const PagedAttentionParams& p = args.p;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kMergeWarps + threadIdx.x / 32;
  if (pair >= p.num_seqs * p.num_heads) return;
  const int64_t seq = pair / p.num_heads;
  const int64_t head = pair % p.num_heads;
  const int split_keys = args.plan.split_keys;
  const int num_splits = args.plan.num_splits;
  const int64_t context = p.context_lens[seq];
  if (context <= split_keys) return;
  const int64_t used = (context + split_keys - 1) / split_keys;
  const int splits = static_cast<int>(used < num_splits ? used : num_splits);
  const float* lse = args.part_lse + pair * num_splits;
  float max_lse = -INFINITY;
  for (int s = lane; s < splits; s += 32) max_lse = fmaxf(max_lse, lse[s]);
  for (int offset = 16; offset > 0; offset /= 2) {
    max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffffu, max_lse, offset));
  }
  float total = 0.0f;
  for (int s = lane; s < splits; s += 32) total += exp2f(lse[s] - max_lse);
  for (int offset = 16; offset > 0; offset /= 2) {
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  }
  const int head_dim = static_cast<int>(p.cache.head_dim);
  const int d = 4 * lane;
  if (d >= head_dim) return;
  const float* part = args.part_out + pair * num_splits * head_dim + d;
  float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
  for (int s = 0; s < splits; ++s) {
    const float weight = exp2f(lse[s] - max_lse);
    const float4 value =
        *reinterpret_cast<const float4*>(part + static_cast<int64_t>(s) * head_dim);
    sum.x += weight * value.x;
    sum.y += weight * value.y;
    sum.z += weight * value.z;
    sum.w += weight * value.w;
  }
  const float inv_total = 1.0f / total;
  const int64_t token = seq;
  __nv_bfloat162* out =
      reinterpret_cast<__nv_bfloat162*>(p.out + (token * p.num_heads + head) * head_dim + d);
  out[0] = __floats2bfloat162_rn(sum.x * inv_total, sum.y * inv_total);
  out[1] = __floats2bfloat162_rn(sum.z * inv_total, sum.w * inv_total);
}

template <int kHeadTiles, int kDimHalves>
void launch_split(const SplitArgs& args, unsigned blocks, cudaStream_t stream) {
  split_kernel<kHeadTiles, kDimHalves><<<blocks, kThreads, 0, stream>>>(args);
}

// The split kernel for this plan, then the merge when there are several splits.
cudaError_t launch_decode_attention(const PagedAttentionParams& p, const SplitPlan& plan,
                                    void* workspace, size_t bytes, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.num_heads == 0) return cudaSuccess;
  const int64_t blocks = p.num_seqs * p.cache.num_kv_heads * plan.num_splits;
  const int64_t partials = p.num_seqs * p.num_heads * plan.num_splits;
  const size_t needed = plan.num_splits > 1 ? partials * (p.cache.head_dim + 1) * sizeof(float) : 0;
  if (bytes < needed || blocks > 0x7fffffff || plan.split_keys % kTileKeys != 0 ||
      plan.split_keys <= 0) {
    return cudaErrorInvalidValue;
  }
  SplitArgs args;
  args.p = p;
  args.plan = plan;
  if (plan.num_splits > 1) {
    args.part_out = static_cast<float*>(workspace);
    args.part_lse = args.part_out + partials * p.cache.head_dim;
  }
  const int64_t group = p.num_heads / p.cache.num_kv_heads;
  const auto grid = static_cast<unsigned>(blocks);
  if (group <= 8) {
    if (p.cache.head_dim <= 64) {
      launch_split<1, 1>(args, grid, stream);
    } else {
      launch_split<1, 2>(args, grid, stream);
    }
  } else if (p.cache.head_dim <= 64) {
    launch_split<2, 1>(args, grid, stream);
  } else {
    launch_split<2, 2>(args, grid, stream);
  }
  if (plan.num_splits > 1) {
    const int64_t merge_blocks = (p.num_seqs * p.num_heads + kMergeWarps - 1) / kMergeWarps;
    merge_kernel<<<static_cast<unsigned>(merge_blocks), kMergeWarps * 32, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace

bool decode_attention_supports(const PagedAttentionParams& params, int64_t max_query_len) {
  return max_query_len == 1 && params.num_tokens == params.num_seqs &&
         params.cache.num_kv_heads > 0 && params.num_heads % params.cache.num_kv_heads == 0 &&
         params.num_heads / params.cache.num_kv_heads <= kMaxGroup &&
         params.cache.head_dim % 8 == 0 && params.cache.head_dim <= kMaxDim;
}

size_t decode_attention_workspace_bytes(const PagedAttentionParams& params) {
  return workspace_bytes(params);
}

cudaError_t decode_attention_bf16(const PagedAttentionParams& params, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream) {
  if (params.num_seqs == 0 || params.num_heads == 0) return cudaSuccess;
  if (!decode_attention_supports(params, 1) ||
      workspace_bytes < decode_attention_workspace_bytes(params)) {
    return cudaErrorInvalidValue;
  }
  return launch_decode_attention(params, plan_splits(params), workspace, workspace_bytes, stream);
}

}  // namespace tidal::cuda
