// Latent attention on the tensor cores. A block of 4 warps takes kRows = 16 kMTiles heads of one
// query token (rows past num_heads are zeros) and walks the token's visible cache rows in tiles
// of 32. Shared memory holds the block's queries [kRows, latent | rope], two cache tiles [32,
// latent | rope] (the next one loads with cp.async while this one is used) and the tile's
// probabilities P [kRows, 32].
//
// Per tile, warp w computes S = Q K^T for the tile's keys 8w..8w+7 over every dimension (latent
// and rope alike: one dot product of width latent_dim + rope_dim), and O += P V for its quarter of
// the latent columns, V being the tile's latents (the same shared rows as the keys). The softmax
// row max and sum cross the warps through shared memory, so every warp keeps the same running
// max and sum of each row. Rope dims are padded to a multiple of 32 with zeros on both sides.
//
// Few tokens (decode at a small batch) would leave most SMs idle, and no workspace may hold
// split-KV partials: instead a thread-block cluster of `splits` blocks (Hopper) shares one
// (token, head group), block r taking tiles r, r + splits, ...; at the end each block leaves its
// softmax state (row max, row sum, O) in its own shared memory, and block r merges columns
// [r L / splits, (r + 1) L / splits) of every rank's state through distributed shared memory and
// writes them. One pass, nothing allocated.
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/latent_attention.cuh"
#include "kernels/cuda/ptx.cuh"

namespace tidal::cuda {
namespace {

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;
using namespace ptx;  // NOLINT(google-build-using-namespace): the kernel is mostly these

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeys = 32;  // cache rows a tile: 8 per warp in S
constexpr int kPad = 8;    // bf16 a shared row: 16-byte aligned, ldmatrix rows on distinct banks
constexpr int kPLd = kKeys + kPad;
constexpr float kLog2e = 1.4426950408889634f;
// 32-head blocks (each tile serves twice the heads, one block an SM) once there are at least
// this many of them (about a wave); fewer, larger blocks would leave SMs idle. On an H100 a
// 32-head block took ~3.5 us a tile against 2.7-5 us for a 16-head one, so a wave of wide blocks
// beats two narrow ones.
constexpr int64_t kMinWideBlocks = 128;
// The most blocks of a cluster (the portable cluster size), and the fewest tiles worth a split.
constexpr int kMaxSplits = 8;
constexpr int64_t kMinTilesPerSplit = 4;

// 2^x on the special function unit; 2^-inf = 0.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Width of a shared row's data: latent | rope | zeros, a multiple of 32 (two k-steps).
__host__ __device__ inline int padded_width(int64_t latent_dim, int64_t rope_dim) {
  return static_cast<int>(latent_dim + (rope_dim + 31) / 32 * 32);
}

// Bytes of the region that holds the two cache tiles during the walk and the block's softmax
// state for the merge after it (a multiple of 16).
template <int kMTiles>
__host__ __device__ inline size_t tile_region_bytes(int latent_dim, int width) {
  constexpr int kRows = 16 * kMTiles;
  const size_t tiles = static_cast<size_t>(2 * kKeys * (width + kPad)) * sizeof(bf16);
  const size_t merge = static_cast<size_t>(kRows * (latent_dim + 3 + kMaxSplits)) * sizeof(float);
  return ((tiles > merge ? tiles : merge) + 15) / 16 * 16;
}

template <int kMTiles>
__host__ __device__ inline size_t shared_bytes(int latent_dim, int width) {
  constexpr int kRows = 16 * kMTiles;
  return static_cast<size_t>(kRows * (width + kPad) + kRows * kPLd) * sizeof(bf16) +
         tile_region_bytes<kMTiles>(latent_dim, width) +
         static_cast<size_t>(2 * kWarps * kRows) * sizeof(float);
}

// Lane l of a warp is (g, t) = (l / 4, l % 4): in an m16n8 accumulator it holds rows g and g + 8,
// columns 2t and 2t + 1. kMaxDTiles: the most 8-column n-tiles of O a warp holds (latent_dim / 32
// of them are used).
template <int kMTiles, int kMaxDTiles>
__global__ void __launch_bounds__(kThreads) latent_attention_kernel(const LatentAttentionParams p) {
  constexpr int kRows = 16 * kMTiles;
  const int latent_dim = static_cast<int>(p.latent_dim);
  const int rope_dim = static_cast<int>(p.rope_dim);
  const int width = padded_width(latent_dim, rope_dim);
  const int ld = width + kPad;
  const uint32_t row_bytes = static_cast<uint32_t>(ld) * sizeof(bf16);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const q_tile = reinterpret_cast<bf16*>(smem_raw);
  bf16* const kv_tiles = q_tile + kRows * ld;
  bf16* const p_tile = reinterpret_cast<bf16*>(reinterpret_cast<unsigned char*>(kv_tiles) +
                                               tile_region_bytes<kMTiles>(latent_dim, width));
  float* const red_max = reinterpret_cast<float*>(p_tile + kRows * kPLd);  // [kWarps][kRows]
  float* const red_sum = red_max + kWarps * kRows;                         // [kWarps][kRows]

  const cg::cluster_group cluster = cg::this_cluster();
  const int splits = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t token = blockIdx.x / splits;
  const int head0 = static_cast<int>(blockIdx.y) * kRows;
  const int rows = min(kRows, static_cast<int>(p.num_heads) - head0);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int t = lane % 4;

  // The sequence of this token (the last s with query_start[s] <= token) and its visible keys.
  int seq = -1;
  if (p.num_seqs > 0 && token >= p.query_start[0] && token < p.query_start[p.num_seqs]) {
    int lo = 0;
    int hi = static_cast<int>(p.num_seqs) - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.query_start[mid] <= token) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    seq = lo;
  }
  int visible = 0;
  if (seq >= 0) {
    const int num_queries = p.query_start[seq + 1] - p.query_start[seq];
    const int context = p.context_lens[seq];
    visible =
        min(context - num_queries + static_cast<int>(token - p.query_start[seq]) + 1, context);
  }
  bf16* const out = p.out + (token * p.num_heads + head0) * p.latent_dim;
  if (visible <= 0) {  // padding (or nothing cached): zero rows, the whole cluster leaves
    if (rank == 0) {
      for (int i = tid; i < rows * latent_dim; i += kThreads) out[i] = __float2bfloat16(0.0f);
    }
    return;
  }

  // Lane r of every warp holds the cache slot of key r of a tile (-1 past the visible keys); the
  // next tile's is loaded a tile ahead, so the page-table read never stalls a tile's copies.
  const int32_t* const table = p.block_tables + seq * p.max_blocks_per_seq;
  const int block_size = static_cast<int>(p.block_size);
  const auto fetch_slot = [&](int tile) {
    const int key = tile * kKeys + lane;
    return key < visible
               ? static_cast<int64_t>(table[key / block_size]) * block_size + key % block_size
               : int64_t{-1};
  };
  const int num_tiles = (visible + kKeys - 1) / kKeys;
  int64_t slots = rank < num_tiles ? fetch_slot(rank) : -1;

  // Q rows [latent | rope | zeros] in 16-byte chunks (latent_dim and rope_dim are multiples of 8,
  // so no chunk straddles the two); rows past the heads are zeros. The cache tiles' pad columns
  // are zeroed once (the loads never write them).
  const bool q_aligned =
      (reinterpret_cast<uintptr_t>(p.q_latent) | reinterpret_cast<uintptr_t>(p.q_rope)) % 16 == 0;
  const int chunks = width / 8;
  for (int i = tid; i < kRows * chunks; i += kThreads) {
    const int r = i / chunks;
    const int c = i % chunks * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < rows && c < latent_dim + rope_dim) {
      const int64_t row = token * p.num_heads + head0 + r;
      const bf16* const src = c < latent_dim ? p.q_latent + row * latent_dim + c
                                             : p.q_rope + row * rope_dim + (c - latent_dim);
      if (q_aligned) {
        value = *reinterpret_cast<const uint4*>(src);
      } else {
        bf16 parts[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) parts[e] = src[e];
        memcpy(&value, parts, sizeof(value));
      }
    }
    *reinterpret_cast<uint4*>(q_tile + r * ld + c) = value;
  }
  const int pad_chunks = (width - latent_dim - rope_dim) / 8;
  for (int i = tid; i < 2 * kKeys * pad_chunks; i += kThreads) {
    const int c = latent_dim + rope_dim + i % pad_chunks * 8;
    *reinterpret_cast<uint4*>(kv_tiles + (i / pad_chunks) * ld + c) = make_uint4(0, 0, 0, 0);
  }

  // A tile of cache rows (lane r of `tile_slots`: row r's slot) into buffer `index`, a warp a row
  // at a time: 16-byte chunks of the latent, then of the rope key. Rows past the visible keys
  // load as zeros (cp.async of 0 bytes), so no stale value, possibly NaN, meets a zero
  // probability.
  const int latent_chunks = latent_dim / 8;
  const int row_chunks = latent_chunks + rope_dim / 8;
  const auto load_tile = [&](int index, int64_t tile_slots) {
    bf16* const buffer = kv_tiles + index * kKeys * ld;
    for (int r = warp; r < kKeys; r += kWarps) {
      const int64_t slot = __shfl_sync(0xffffffffu, tile_slots, r);
      const bool valid = slot >= 0;
      const bf16* const latent = p.latents + (valid ? slot : 0) * latent_dim;
      const bf16* const rope = p.rope_keys + (valid ? slot : 0) * rope_dim;
      const uint32_t dst = shared_address(buffer + r * ld);
      for (int c = lane; c < row_chunks; c += 32) {
        const bf16* const src = c < latent_chunks ? latent + c * 8 : rope + (c - latent_chunks) * 8;
        copy_async_16(dst + c * 16, src, valid ? 16 : 0);
      }
    }
  };
  if (rank < num_tiles) load_tile(0, slots);
  copy_async_commit();
  slots = rank + splits < num_tiles ? fetch_slot(rank + splits) : -1;

  // ldmatrix row addresses of this lane. Q and P (A operands, x4 = a 16x16 k-step): rows
  // lane % 16, columns 8 (lane / 16). K (B operand of S, x4 = two k-steps of the warp's 8 keys):
  // key 8 warp + lane % 8, dims 8 (lane / 8). V (B operand of O, transposed, x4 = two 8-column
  // n-tiles of a 16-key k-step): key lane % 8 + 8 ((lane / 8) % 2), columns 8 (lane / 16) from the
  // warp's first.
  const int d_tiles = latent_dim / 32;  // O n-tiles of each warp
  const int column0 = warp * d_tiles * 8;
  const uint32_t q_addr = shared_address(q_tile + (lane % 16) * ld + lane / 16 * 8);
  const uint32_t p_addr = shared_address(p_tile + (lane % 16) * kPLd + lane / 16 * 8);
  const uint32_t k_offset = static_cast<uint32_t>(((warp * 8 + lane % 8) * ld + lane / 8 * 8) * 2);
  const uint32_t v_offset =
      static_cast<uint32_t>(((lane % 8 + (lane / 8) % 2 * 8) * ld + column0 + lane / 16 * 8) * 2);
  const uint32_t kv_base = shared_address(kv_tiles);
  const uint32_t buffer_bytes = static_cast<uint32_t>(kKeys) * row_bytes;

  // Per m-tile and half h (row g + 8h): the running max (raw score) and sum, the same in every
  // warp and in the four lanes of a g.
  float row_max[kMTiles][2];
  float row_sum[kMTiles][2];
  float o[kMTiles][kMaxDTiles][4];
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[mi][h] = -INFINITY;
      row_sum[mi][h] = 0.0f;
    }
#pragma unroll
    for (int d = 0; d < kMaxDTiles; ++d) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][d][e] = 0.0f;
    }
  }
  const float scale_log2 = p.scale * kLog2e;

  int iteration = 0;
  for (int tile = rank; tile < num_tiles; tile += splits, ++iteration) {
    copy_async_wait<0>();
    __syncthreads();  // this tile (and Q) landed; every warp is done with the last tile and P
    if (tile + splits < num_tiles) load_tile((iteration + 1) % 2, slots);
    copy_async_commit();
    if (tile + 2 * splits < num_tiles) slots = fetch_slot(tile + 2 * splits);
    const uint32_t buffer = kv_base + static_cast<uint32_t>(iteration % 2) * buffer_bytes;

    // S for the warp's 8 keys: 32 dimensions (two mma k-steps) per iteration, the even and odd
    // k-steps into separate accumulators (two dependency chains of mma, summed at the end).
    float s[kMTiles][4];
    float s_odd[kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[mi][e] = 0.0f;
        s_odd[mi][e] = 0.0f;
      }
    }
    for (int kp = 0; kp < width / 32; ++kp) {
      uint32_t b[4];
      load_matrix_x4(b, buffer + k_offset + kp * 64);
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
        uint32_t a0[4];
        uint32_t a1[4];
        const uint32_t q_row = q_addr + mi * 16 * row_bytes + kp * 64;
        load_matrix_x4(a0, q_row);
        load_matrix_x4(a1, q_row + 32);
        mma_bf16_16816(s[mi], a0, b[0], b[1]);
        mma_bf16_16816(s_odd[mi], a1, b[2], b[3]);
      }
    }
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][e] += s_odd[mi][e];
    }

    // Keys past the visible ones (the last tile's tail) score -inf; the warp's row maxima.
    const int limit = visible - tile * kKeys - warp * 8 - 2 * t;  // key 2t + e % 2 is visible below
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (e % 2 >= limit) s[mi][e] = -INFINITY;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = fmaxf(s[mi][2 * h], s[mi][2 * h + 1]);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        if (t == 0) red_max[warp * kRows + mi * 16 + g + 8 * h] = m;
      }
    }
    __syncthreads();

    // The tile's row max over the warps (finite: key 0 of the tile is visible), the rounded
    // probabilities into P, and the warp's part of each row sum (of the rounded values).
    float correction[kMTiles][2];
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = mi * 16 + g + 8 * h;
        float tile_max = row_max[mi][h];
#pragma unroll
        for (int w = 0; w < kWarps; ++w) tile_max = fmaxf(tile_max, red_max[w * kRows + row]);
        const float base = tile_max * scale_log2;
        correction[mi][h] = exp2_approx(row_max[mi][h] * scale_log2 - base);  // 0 on the first
        row_max[mi][h] = tile_max;
        const __nv_bfloat162 pair =
            __floats2bfloat162_rn(exp2_approx(fmaf(s[mi][2 * h], scale_log2, -base)),
                                  exp2_approx(fmaf(s[mi][2 * h + 1], scale_log2, -base)));
        *reinterpret_cast<__nv_bfloat162*>(p_tile + row * kPLd + warp * 8 + 2 * t) = pair;
        float sum = __low2float(pair) + __high2float(pair);
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (t == 0) red_sum[warp * kRows + row] = sum;
      }
    }
    __syncthreads();

#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = mi * 16 + g + 8 * h;
        float tile_sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) tile_sum += red_sum[w * kRows + row];
        row_sum[mi][h] = row_sum[mi][h] * correction[mi][h] + tile_sum;
#pragma unroll
        for (int d = 0; d < kMaxDTiles; ++d) {
          o[mi][d][2 * h] *= correction[mi][h];
          o[mi][d][2 * h + 1] *= correction[mi][h];
        }
      }
    }

    // O += P V over the tile's 32 keys (two k-steps), the warp's latent columns.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      uint32_t pa[kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
        load_matrix_x4(pa[mi], p_addr + mi * 16 * kPLd * 2 + kk * 32);
      }
      const uint32_t v_row = buffer + v_offset + kk * 16 * row_bytes;
#pragma unroll
      for (int dp = 0; dp < kMaxDTiles / 2; ++dp) {
        if (2 * dp + 1 < d_tiles) {
          uint32_t b[4];
          load_matrix_x4_trans(b, v_row + dp * 32);
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            mma_bf16_16816(o[mi][2 * dp], pa[mi], b[0], b[1]);
            mma_bf16_16816(o[mi][2 * dp + 1], pa[mi], b[2], b[3]);
          }
        } else if (2 * dp < d_tiles) {  // an odd last n-tile
          uint32_t b[2];
          load_matrix_x2_trans(b, v_row + dp * 32);
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) mma_bf16_16816(o[mi][2 * dp], pa[mi], b[0], b[1]);
        }
      }
    }
  }

  // The block's state into its own shared memory (the cache tiles are done with): O [kRows, L]
  // unnormalised, each row's max and sum (the same in every warp: warp 0's).
  __syncthreads();
  float* const merge_o = reinterpret_cast<float*>(kv_tiles);
  float* const merge_max = merge_o + kRows * latent_dim;
  float* const merge_sum = merge_max + kRows;
  float* const merge_inverse = merge_sum + kRows;
  float* const merge_weight = merge_inverse + kRows;  // [kRows][kMaxSplits]
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = mi * 16 + g + 8 * h;
      float* const o_row = merge_o + row * latent_dim + column0 + 2 * t;
#pragma unroll
      for (int d = 0; d < kMaxDTiles; ++d) {
        if (d < d_tiles) {
          o_row[d * 8] = o[mi][d][2 * h];
          o_row[d * 8 + 1] = o[mi][d][2 * h + 1];
        }
      }
      if (warp == 0 && t == 0) {
        merge_max[row] = row_max[mi][h];
        merge_sum[row] = row_sum[mi][h];
      }
    }
  }
  cluster.sync();  // every rank's state is in place

  // Each row's weight of every rank, 2^(scale log2e (max_r - max)) (0 for a rank that saw no
  // key), and the inverse of the merged sum (positive: rank 0 saw key 0).
  for (int row = tid; row < kRows; row += kThreads) {
    float merged_max = -INFINITY;
    for (int r = 0; r < splits; ++r) {
      merged_max = fmaxf(merged_max, *cluster.map_shared_rank(merge_max + row, r));
    }
    float total = 0.0f;
    for (int r = 0; r < splits; ++r) {
      const float weight =
          exp2_approx((*cluster.map_shared_rank(merge_max + row, r) - merged_max) * scale_log2);
      merge_weight[row * kMaxSplits + r] = weight;
      total += weight * *cluster.map_shared_rank(merge_sum + row, r);
    }
    merge_inverse[row] = 1.0f / total;
  }
  __syncthreads();

  // This rank's columns of the output, rows of real heads only.
  const int slice = latent_dim / splits;
  for (int i = tid; i < rows * slice; i += kThreads) {
    const int row = i / slice;
    const int column = rank * slice + i % slice;
    float sum = 0.0f;
    for (int r = 0; r < splits; ++r) {
      sum += merge_weight[row * kMaxSplits + r] *
             *cluster.map_shared_rank(merge_o + row * latent_dim + column, r);
    }
    out[static_cast<int64_t>(row) * latent_dim + column] =
        __float2bfloat16(sum * merge_inverse[row]);
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
}

template <int kMTiles, int kMaxDTiles>
cudaError_t launch(const LatentAttentionParams& params, int splits, cudaStream_t stream) {
  constexpr int64_t kRows = 16 * kMTiles;
  const auto kernel = latent_attention_kernel<kMTiles, kMaxDTiles>;
  const size_t bytes = shared_bytes<kMTiles>(static_cast<int>(params.latent_dim),
                                             padded_width(params.latent_dim, params.rope_dim));
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes));
  if (status != cudaSuccess) return status;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(splits);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(params.num_tokens * splits),
                        static_cast<unsigned>((params.num_heads + kRows - 1) / kRows));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = bytes;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = 1;
  status = cudaLaunchKernelEx(&config, kernel, params);
  if (status != cudaSuccess) return status;
  return cudaGetLastError();
}

// 16 n-tiles a warp for latents up to 512, 4 up to 128 (fewer registers).
template <int kMTiles>
cudaError_t launch_for_width(const LatentAttentionParams& params, int splits, cudaStream_t stream) {
  if (params.latent_dim <= 128) return launch<kMTiles, 4>(params, splits, stream);
  return launch<kMTiles, static_cast<int>(kMaxLatentDim / 32)>(params, splits, stream);
}

// The GPU's SMs (asked once per device; not a stream operation, so also fine while capturing).
int multiprocessor_count() {
  int device = 0;
  int count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 132;
  }
  return count;
}

}  // namespace

bool latent_attention_supports(int64_t latent_dim, int64_t rope_dim) {
  return latent_dim > 0 && latent_dim % 32 == 0 && latent_dim <= kMaxLatentDim && rope_dim >= 0 &&
         rope_dim % 8 == 0 && rope_dim <= kMaxLatentRopeDim;
}

cudaError_t latent_attention_bf16(const LatentAttentionParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0 || params.num_heads == 0) return cudaSuccess;
  if (!latent_attention_supports(params.latent_dim, params.rope_dim) || params.block_size <= 0 ||
      params.num_tokens > 0x7fffffff || params.num_heads > 16 * 65535) {
    return cudaErrorInvalidValue;
  }
  const int64_t wide_blocks = params.num_tokens * ((params.num_heads + 31) / 32);
  if (params.num_heads > 16 && wide_blocks >= kMinWideBlocks) {
    return launch_for_width<2>(params, 1, stream);
  }
  // 16-head blocks, two an SM: split each (token, head group) over a cluster while the GPU has
  // room for the blocks and every split keeps kMinTilesPerSplit tiles of the longest context
  // (max_context_len 0: unknown, taken as long).
  const int64_t blocks = params.num_tokens * ((params.num_heads + 15) / 16);
  const int64_t room = 2 * static_cast<int64_t>(multiprocessor_count());
  const int64_t max_tiles =
      params.max_context_len > 0 ? (params.max_context_len + kKeys - 1) / kKeys : INT64_MAX;
  int splits = 1;
  while (splits < kMaxSplits && blocks * splits * 2 <= room &&
         splits * 2 * kMinTilesPerSplit <= max_tiles) {
    splits *= 2;
  }
  if (params.num_tokens * splits > 0x7fffffff) splits = 1;
  return launch_for_width<1>(params, splits, stream);
}

}  // namespace tidal::cuda
