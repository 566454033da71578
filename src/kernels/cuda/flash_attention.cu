// The tiled prefill attention, FlashAttention-2 style: a block of 4 warps owns 16 kMTiles query
// rows a warp of one (sequence, head), and walks the sequence's keys in tiles of 64 through the
// page table. S = Q K^T and O += P V are mma.m16n8k16 products whose operands come from shared
// memory through ldmatrix (Q, K; V transposed); S, P and O stay in registers, so a row's online
// softmax never leaves the four lanes that hold it. K and V have one buffer each, filled with
// cp.async: V of a tile loads while S is computed, K of the next tile while P V is. (Two stages
// of both with one barrier a tile, and skipping O's rescale while no row's max moves, each
// measured 2-5% slower on an H200 at 8K tokens.)
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/flash_attention.cuh"
#include "kernels/cuda/ptx.cuh"

namespace tidal::cuda {
namespace {

using bf16 = __nv_bfloat16;
using namespace ptx;  // NOLINT(google-build-using-namespace): the kernel is mostly these

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeys = 64;  // keys per tile
constexpr int kPad = 8;  // bf16 a shared row: 16-byte aligned, and ldmatrix rows on distinct banks
constexpr float kLog2e = 1.4426950408889634f;
constexpr int64_t kMinWideBlocks = 512;  // 128-query blocks for at least this many

// kDim: head_dim rounded up to the kernel's (zeros past head_dim); kMTiles: 16-row mma tiles a
// warp, so a block takes 64 kMTiles queries.
template <int kDim, int kMTiles>
struct Tiles {
  static constexpr int kRows = kWarps * 16 * kMTiles;
  static constexpr int kLd = kDim + kPad;   // shared row stride in bf16
  static constexpr int kChunks = kDim / 8;  // 16-byte chunks a row
  static constexpr size_t kSmemBytes = static_cast<size_t>(kRows + 2 * kKeys) * kLd * sizeof(bf16);
  static_assert(kDim % 16 == 0 && kKeys * kChunks % kThreads == 0);
};

// 2^x on the special function unit; 2^-inf = 0.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two f32 as one bf16 pair register, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// Lane l of a warp is (g, t) = (l / 4, l % 4): in an m16n8 accumulator it holds rows g and g + 8,
// columns 2t and 2t + 1; the four lanes of a g share its rows. Warp w's m-tile i is block rows
// 16 (w kMTiles + i) onwards. The grid is (head, query tile, sequence); the heads of one KV head
// run side by side, so its tiles are read from L2 by all of them.
template <int kDim, int kMTiles>
__global__ void __launch_bounds__(kThreads, 2)
    flash_attention_kernel(const PagedAttentionParams p) {
  using T = Tiles<kDim, kMTiles>;
  constexpr int kLd = T::kLd;
  constexpr int kNTiles = kKeys / 8;  // of S
  constexpr int kDTiles = kDim / 8;   // of O
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const q_tile = reinterpret_cast<bf16*>(smem_raw);
  bf16* const k_tile = q_tile + T::kRows * kLd;
  bf16* const v_tile = k_tile + kKeys * kLd;
  __shared__ int64_t key_offsets[2][kKeys];

  const int head = static_cast<int>(blockIdx.x);
  const int seq = static_cast<int>(blockIdx.z);
  const int seq_begin = p.query_start[seq];
  const int num_queries = p.query_start[seq + 1] - seq_begin;
  // The last query tiles see the most keys: they launch first, the short ones fill the tail.
  const int first = static_cast<int>(gridDim.y - 1 - blockIdx.y) * T::kRows;
  if (first >= num_queries) return;
  const int rows = min(num_queries - first, T::kRows);
  const int context = p.context_lens[seq];
  const int head_dim = static_cast<int>(p.cache.head_dim);
  const int kv_head = head / static_cast<int>(p.num_heads / p.cache.num_kv_heads);
  const int64_t slot_stride = p.cache.num_kv_heads * p.cache.head_dim;
  const int block_size = static_cast<int>(p.cache.block_size);
  const int32_t* const table = p.block_tables + seq * p.max_blocks_per_seq;
  // Block row r is query first + r at position pos0 + r: it sees keys [0, min(pos0 + r + 1,
  // context)). Tiles below keys_unmasked are whole for every row; none reaches past keys_end.
  const int pos0 = context - num_queries + first;
  const int keys_end = max(0, min(pos0 + rows, context));
  const int keys_unmasked = max(0, min(pos0 + 1, context));
  const int num_tiles = (keys_end + kKeys - 1) / kKeys;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int t = lane % 4;

  // Q rows past the block's queries and dimensions past head_dim are zeros.
  const bf16* const q_src =
      p.q + (static_cast<int64_t>(seq_begin + first) * p.num_heads + head) * p.cache.head_dim;
  const int64_t q_stride = p.num_heads * p.cache.head_dim;
#pragma unroll
  for (int j = 0; j < T::kRows * T::kChunks / kThreads; ++j) {
    const int i = tid + j * kThreads;
    const int r = i / T::kChunks;
    const int c = i % T::kChunks * 8;
    const bool valid = r < rows && c < head_dim;
    copy_async_16(shared_address(q_tile + r * kLd + c), valid ? q_src + r * q_stride + c : q_src,
                  valid ? 16 : 0);
  }
  // The cache element offset of each key of a tile (-1 past keys_end: its rows load as zeros,
  // so no stale entry, possibly NaN, meets a zero probability), for the tiles of both parities:
  // tile n + 1's is written while tile n is current, and read by its K and V loads.
  const auto fill_offsets = [&](int k0) {
    if (tid < kKeys) {
      const int key = k0 + tid;
      int64_t offset = -1;
      if (key < keys_end) {
        const int64_t slot =
            static_cast<int64_t>(table[key / block_size]) * block_size + key % block_size;
        offset = slot * slot_stride + kv_head * p.cache.head_dim;
      }
      key_offsets[k0 / kKeys % 2][tid] = offset;
    }
  };
  const auto load_kv_tile = [&](bf16* tile, const bf16* pool, int k0) {
    const int64_t* const offsets = key_offsets[k0 / kKeys % 2];
#pragma unroll
    for (int j = 0; j < kKeys * T::kChunks / kThreads; ++j) {
      const int i = tid + j * kThreads;
      const int r = i / T::kChunks;
      const int c = i % T::kChunks * 8;
      const int64_t offset = offsets[r];
      const bool valid = offset >= 0 && c < head_dim;
      copy_async_16(shared_address(tile + r * kLd + c), valid ? pool + offset + c : pool,
                    valid ? 16 : 0);
    }
  };
  fill_offsets(0);
  __syncthreads();
  if (num_tiles > 0) load_kv_tile(k_tile, p.cache.key, 0);
  copy_async_commit();

  // ldmatrix row addresses of this lane. Q (A operand, x4 = one 16x16 k-step): rows lane % 16,
  // columns 8 (lane / 16). K (B operand of S, x4 = two 8-key n-tiles of a k-step): key
  // lane % 8 + 8 (lane / 16), dims 8 ((lane / 8) % 2). V (B operand of O, transposed, x4 = two
  // 8-dim n-tiles of a 16-key k-step): key lane % 8 + 8 ((lane / 8) % 2), dims 8 (lane / 16).
  constexpr uint32_t kRowBytes = kLd * sizeof(bf16);
  const uint32_t q_addr =
      shared_address(q_tile + (warp * kMTiles * 16 + lane % 16) * kLd + lane / 16 * 8);
  const uint32_t k_addr =
      shared_address(k_tile + (lane % 8 + lane / 16 * 8) * kLd + (lane / 8) % 2 * 8);
  const uint32_t v_addr =
      shared_address(v_tile + (lane % 8 + (lane / 8) % 2 * 8) * kLd + lane / 16 * 8);

  // Per m-tile and half h (row g + 8h): the row's running max (raw score) and this lane's part
  // of its running sum.
  float row_max[kMTiles][2];
  float row_sum[kMTiles][2];
  float o[kMTiles][kDTiles][4];
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[mi][h] = -INFINITY;
      row_sum[mi][h] = 0.0f;
    }
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][d][e] = 0.0f;
    }
  }
  const float scale_log2 = p.scale * kLog2e;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int k0 = tile * kKeys;
    copy_async_wait<0>();
    __syncthreads();  // K of this tile (and Q) landed; every warp is done with the last V
    load_kv_tile(v_tile, p.cache.value, k0);
    if (tile + 1 < num_tiles) fill_offsets(k0 + kKeys);
    copy_async_commit();

    float s[kMTiles][kNTiles][4];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][n][e] = 0.0f;
      }
    }
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi)
        load_matrix_x4(a[mi], q_addr + mi * 16 * kRowBytes + ks * 32);
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        load_matrix_x4(b, k_addr + np * 16 * kRowBytes + ks * 32);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          mma_bf16_16816(s[mi][2 * np], a[mi], b[0], b[1]);
          mma_bf16_16816(s[mi][2 * np + 1], a[mi], b[2], b[3]);
        }
      }
    }

    if (k0 + kKeys > keys_unmasked) {  // the diagonal (or the end) crosses this tile
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // Key k0 + 8n + 2t + e % 2 against the row's visible keys, relative to the tile.
          const int row = (warp * kMTiles + mi) * 16 + g + 8 * (e / 2);
          const int limit = min(pos0 + row + 1, context) - k0 - 2 * t - e % 2;
#pragma unroll
          for (int n = 0; n < kNTiles; ++n) {
            if (n * 8 >= limit) s[mi][n][e] = -INFINITY;
          }
        }
      }
    }

    // Online softmax in base 2: p = 2^(scale log2e (s - max)). A row with no key seen yet keeps
    // max -inf; its probabilities and correction are then 0 (O and the sum are still 0).
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float tile_max = row_max[mi][h];
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
          tile_max = fmaxf(tile_max, fmaxf(s[mi][n][2 * h], s[mi][n][2 * h + 1]));
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float base = tile_max == -INFINITY ? 0.0f : tile_max * scale_log2;
        const float correction = exp2_approx(row_max[mi][h] * scale_log2 - base);
        row_max[mi][h] = tile_max;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
          for (int e = 2 * h; e < 2 * h + 2; ++e) {
            s[mi][n][e] = exp2_approx(fmaf(s[mi][n][e], scale_log2, -base));
            sum += s[mi][n][e];
          }
        }
        row_sum[mi][h] = row_sum[mi][h] * correction + sum;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          o[mi][d][2 * h] *= correction;
          o[mi][d][2 * h + 1] *= correction;
        }
      }
    }

    // P as A operands: the accumulators of n-tiles 2kk and 2kk + 1 are the k-step kk fragment.
    uint32_t pa[kMTiles][kNTiles / 2][4];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int kk = 0; kk < kNTiles / 2; ++kk) {
        pa[mi][kk][0] = pack_bf16(s[mi][2 * kk][0], s[mi][2 * kk][1]);
        pa[mi][kk][1] = pack_bf16(s[mi][2 * kk][2], s[mi][2 * kk][3]);
        pa[mi][kk][2] = pack_bf16(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
        pa[mi][kk][3] = pack_bf16(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
      }
    }

    copy_async_wait<0>();
    __syncthreads();  // V of this tile landed; every warp is done with K
    if (tile + 1 < num_tiles) load_kv_tile(k_tile, p.cache.key, k0 + kKeys);
    copy_async_commit();

#pragma unroll
    for (int kk = 0; kk < kNTiles / 2; ++kk) {
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t b[4];
        load_matrix_x4_trans(b, v_addr + kk * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          mma_bf16_16816(o[mi][2 * dp], pa[mi][kk], b[0], b[1]);
          mma_bf16_16816(o[mi][2 * dp + 1], pa[mi][kk], b[2], b[3]);
        }
      }
    }
  }

  // A row that saw no key (sum 0) writes zeros.
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float total = row_sum[mi][h];
      total += __shfl_xor_sync(0xffffffffu, total, 1);
      total += __shfl_xor_sync(0xffffffffu, total, 2);
      const float inverse = total > 0.0f ? 1.0f / total : 0.0f;
      const int r = (warp * kMTiles + mi) * 16 + g + 8 * h;
      if (r >= rows) continue;
      bf16* const out = p.out + (static_cast<int64_t>(seq_begin + first + r) * p.num_heads + head) *
                                    p.cache.head_dim;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        const int c = d * 8 + 2 * t;
        if (c < head_dim) {
          *reinterpret_cast<__nv_bfloat162*>(out + c) =
              __floats2bfloat162_rn(o[mi][d][2 * h] * inverse, o[mi][d][2 * h + 1] * inverse);
        }
      }
    }
  }
}

template <int kDim, int kMTiles>
cudaError_t launch(const PagedAttentionParams& params, int64_t max_query_len, cudaStream_t stream) {
  using T = Tiles<kDim, kMTiles>;
  const int64_t tiles = (max_query_len + T::kRows - 1) / T::kRows;
  if (tiles > 65535) return cudaErrorInvalidValue;
  const auto kernel = flash_attention_kernel<kDim, kMTiles>;
  const cudaError_t status = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(T::kSmemBytes));
  if (status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(params.num_heads), static_cast<unsigned>(tiles),
                  static_cast<unsigned>(params.num_seqs));
  kernel<<<grid, kThreads, T::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace

bool flash_attention_supports(const PagedAttentionParams& params) {
  return params.cache.head_dim % 16 == 0 && params.cache.head_dim > 0 &&
         params.cache.head_dim <= kFlashMaxHeadDim && params.cache.num_kv_heads > 0 &&
         params.num_heads % params.cache.num_kv_heads == 0;
}

cudaError_t flash_attention_bf16(const PagedAttentionParams& params, int64_t max_query_len,
                                 cudaStream_t stream) {
  if (params.num_tokens == 0 || params.num_heads == 0 || params.num_seqs == 0) return cudaSuccess;
  if (!flash_attention_supports(params) || params.num_seqs > 65535 || max_query_len <= 0) {
    return cudaErrorInvalidValue;
  }
  // 128-query blocks halve the K/V traffic a query; a prefill too small to give the GPU a couple
  // of waves of them (an H200 holds 264 at once) runs faster in 64-query blocks (H200, 32 heads:
  // at 1K tokens, 256 blocks of 128, 55 us against 63; at 2K, 512 blocks, 188 us against 142).
  const int64_t wide_blocks = params.num_heads * params.num_seqs * ((max_query_len + 127) / 128);
  const bool wide = wide_blocks >= kMinWideBlocks;
  if (params.cache.head_dim <= 64) {
    return wide ? launch<64, 2>(params, max_query_len, stream)
                : launch<64, 1>(params, max_query_len, stream);
  }
  return wide ? launch<128, 2>(params, max_query_len, stream)
              : launch<128, 1>(params, max_query_len, stream);
}

}  // namespace tidal::cuda
