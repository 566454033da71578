// The MoE experts' grouped GEMM for bf16 weights: mma.sync m16n8k16 (sm_80 and later) fed by a
// multi-stage cp.async shared-memory pipeline, so many K steps' loads are in flight per block.
// One kernel template, one tile shape per regime: 16- and 32-row tiles for decode (each slot's
// weights streamed once at close to HBM bandwidth), 128-row tiles for prefill (tensor-core bound).
// It takes gemm.cuh's GemmArgs (a gathered, grouped GEMM over expert slots) for bf16 weights and
// bf16 outputs with rows, strides and pointers 16-byte aligned; gemm.cuh's kernel covers the rest.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/ptx.cuh"

namespace tidal::cuda::gemm {

// A block tile of kTileM x kTileN outputs over kTileK-deep steps, warps in a kWarpsM x kWarpsN
// grid, kStages steps of A and B in shared memory.
template <int kTileM_, int kTileN_, int kTileK_, int kWarpsM_, int kWarpsN_, int kStages_>
struct TileConfig {
  static constexpr int kTileM = kTileM_;
  static constexpr int kTileN = kTileN_;
  static constexpr int kTileK = kTileK_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kFragsM = kTileM / kWarpsM / 16;  // m16 fragments per warp
  static constexpr int kFragsN = kTileN / kWarpsN / 8;   // n8 fragments per warp
  // Shared rows padded by 16 bytes: 16-byte aligned for cp.async, and the 8 rows one ldmatrix
  // phase reads fall in distinct banks (row strides of 80 or 144 bytes).
  static constexpr int kStride = kTileK + 8;
  static constexpr int kChunksPerRow = kTileK / 8;  // 16-byte chunks
  static constexpr int kStageBytes = (kTileM + kTileN) * kStride * 2;
  static constexpr int kSharedBytes = kStages * kStageBytes;

  static_assert(kTileK % 16 == 0 && kStages >= 2);
  static_assert(kFragsM >= 1 && kTileM % (kWarpsM * 16) == 0);
  // Pairs of n8 fragments: one ldmatrix.x4 loads two, and kSwiGlu pairs gate with up.
  static_assert(kFragsN % 2 == 0 && kTileN % (kWarpsN * 16) == 0);
  static_assert(kThreads % kChunksPerRow == 0);
  static_assert(kTileM * kChunksPerRow % kThreads == 0 && kTileN * kChunksPerRow % kThreads == 0);
};

// Tiles measured on an H200 over the Qwen3-30B-A3B expert shapes (moe.cu picks by rows per slot).
// Decode: one 16-row tile per slot holds every row of a small batch; 5 steps of 64 x 64 weights
// (40 KiB) in flight per block keep HBM busy.
using DecodeTile = TileConfig<16, 64, 64, 1, 4, 6>;
// Larger decode batches, short prefills: about 8 to 32 rows per slot.
using BatchTile = TileConfig<32, 64, 64, 2, 4, 4>;
// Prefill: hundreds of rows per slot; 8 warps of 64 x 32, two blocks per SM.
using PrefillTile = TileConfig<128, 128, 64, 2, 4, 3>;

namespace detail {

__device__ __forceinline__ void store_pair(__nv_bfloat16* out, int64_t col, int64_t n, float v0,
                                           float v1) {
  // Callers keep rows and `out` 4-byte aligned and col even (the host checks n and ldo % 8).
  if (col + 1 < n) {
    *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v0, v1);
  } else if (col < n) {
    *out = __float2bfloat16(v0);
  }
}

}  // namespace detail

// args.b holds bf16 weights and args.out bf16 rows; k, lda, ldo, n and b_group_stride are
// multiples of 8 and a, b and out 16-byte aligned (pipelined_supported checks it).
//
// Shared memory per stage: A tile [kTileM][kStride] then B tile [kTileN][kStride], B's rows being
// weight rows (the k x n operand in column-major order, as mma's .col wants it). For kSwiGlu, B
// tile row j is gate row (8 * (j / 16) + j % 8) of the block's columns when (j / 8) is even and
// the matching up row when odd, so every thread holds gate and up of the same output element in
// adjacent n8 fragments and the epilogue never leaves registers.
template <typename Config, Epilogue kEpilogue>
__global__ void __launch_bounds__(Config::kThreads) pipelined_gemm_kernel(const GemmArgs args) {
  using C = Config;
  extern __shared__ uint4 pipelined_gemm_shared[];

  // Both loads in flight at once: tile_groups has an entry for every launched tile, and a dead
  // tile's (stale) group is never used.
  const int tile_m = static_cast<int>(blockIdx.y);
  const int32_t live_tiles = args.num_tiles != nullptr ? *args.num_tiles : INT32_MAX;
  const int64_t group = args.tile_groups != nullptr ? args.tile_groups[tile_m] : 0;
  if (tile_m >= live_tiles) return;
  const int64_t row0 = static_cast<int64_t>(tile_m) * C::kTileM;
  constexpr bool kSwiGlu = kEpilogue == Epilogue::kSwiGlu;
  constexpr int kColsPerTile = kSwiGlu ? C::kTileN / 2 : C::kTileN;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kColsPerTile;
  const int tid = static_cast<int>(threadIdx.x);
  const __nv_bfloat16* b = static_cast<const __nv_bfloat16*>(args.b) + group * args.b_group_stride;

  // Every thread copies the same 16-byte column of fixed tile rows at each step; null: zeros.
  constexpr int kRowsPerPass = C::kThreads / C::kChunksPerRow;
  constexpr int kChunksA = C::kTileM / kRowsPerPass;
  constexpr int kChunksB = C::kTileN / kRowsPerPass;
  const int chunk_row = tid / C::kChunksPerRow;
  const int chunk_col = (tid % C::kChunksPerRow) * 8;
  const __nv_bfloat16* a_src[kChunksA];
  const __nv_bfloat16* b_src[kChunksB];
#pragma unroll
  for (int v = 0; v < kChunksB; ++v) {
    const int j = chunk_row + v * kRowsPerPass;
    int64_t col = col0 + j;
    int64_t weight_row = col;
    if constexpr (kSwiGlu) {
      col = col0 + (j / 16) * 8 + j % 8;
      weight_row = (j / 8) % 2 == 0 ? col : args.up_offset + col;
    }
    b_src[v] = col < args.n ? b + weight_row * args.k + chunk_col : nullptr;
  }

  const uint32_t shared_base = ptx::shared_address(pipelined_gemm_shared);
  const uint32_t chunk_offset = static_cast<uint32_t>((chunk_row * C::kStride + chunk_col) * 2);
  constexpr uint32_t kPassBytes = kRowsPerPass * C::kStride * 2;
  constexpr uint32_t kBOffset = C::kTileM * C::kStride * 2;
  const auto load_a = [&](int stage, int64_t k_tile) {
    const int64_t k0 = k_tile * C::kTileK;
    const bool in_k = k0 + chunk_col < args.k;
    const uint32_t base =
        shared_base + static_cast<uint32_t>(stage) * C::kStageBytes + chunk_offset;
#pragma unroll
    for (int v = 0; v < kChunksA; ++v) {
      const bool live = in_k && a_src[v] != nullptr;
      ptx::copy_async_16(base + v * kPassBytes, live ? a_src[v] + k0 : args.a, live ? 16 : 0);
    }
  };
  const auto load_b = [&](int stage, int64_t k_tile) {
    const int64_t k0 = k_tile * C::kTileK;
    const bool in_k = k0 + chunk_col < args.k;
    const uint32_t base =
        shared_base + static_cast<uint32_t>(stage) * C::kStageBytes + chunk_offset + kBOffset;
#pragma unroll
    for (int v = 0; v < kChunksB; ++v) {
      const bool live = in_k && b_src[v] != nullptr;
      ptx::copy_async_16(base + v * kPassBytes, live ? b_src[v] + k0 : b, live ? 16 : 0);
    }
  };

  const int lane = tid % 32;
  const int warp = tid / 32;
  const int warp_m0 = (warp / C::kWarpsN) * (C::kTileM / C::kWarpsM);
  const int warp_n0 = (warp % C::kWarpsN) * (C::kTileN / C::kWarpsN);
  // ldmatrix row addresses (bytes within a stage): A's four 8x8 matrices are rows 0-7 / 8-15 at
  // k 0-7, then at k 8-15 (a0..a3); B's are n 0-7 at k 0-7 and 8-15, then n 8-15 likewise.
  const uint32_t a_frag_offset =
      static_cast<uint32_t>(((warp_m0 + lane % 16) * C::kStride + (lane / 16) * 8) * 2);
  const uint32_t b_frag_offset =
      kBOffset +
      static_cast<uint32_t>(
          ((warp_n0 + lane % 8 + (lane / 16) * 8) * C::kStride + ((lane / 8) % 2) * 8) * 2);
  float acc[C::kFragsM][C::kFragsN][4];
#pragma unroll
  for (int i = 0; i < C::kFragsM; ++i) {
#pragma unroll
    for (int j = 0; j < C::kFragsN; ++j) {
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }
  const auto multiply_stage = [&](int stage) {
    const uint32_t base = shared_base + static_cast<uint32_t>(stage) * C::kStageBytes;
#pragma unroll
    for (int kk = 0; kk < C::kTileK; kk += 16) {
      uint32_t a_frag[C::kFragsM][4];
      uint32_t b_frag[C::kFragsN][2];
#pragma unroll
      for (int i = 0; i < C::kFragsM; ++i) {
        ptx::load_matrix_x4(a_frag[i], base + a_frag_offset + (i * 16 * C::kStride + kk) * 2);
      }
#pragma unroll
      for (int j = 0; j < C::kFragsN; j += 2) {
        uint32_t r[4];
        ptx::load_matrix_x4(r, base + b_frag_offset + (j * 8 * C::kStride + kk) * 2);
        b_frag[j][0] = r[0];
        b_frag[j][1] = r[1];
        b_frag[j + 1][0] = r[2];
        b_frag[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < C::kFragsM; ++i) {
#pragma unroll
        for (int j = 0; j < C::kFragsN; ++j)
          ptx::mma_bf16_16816(acc[i][j], a_frag[i], b_frag[j][0], b_frag[j][1]);
      }
    }
  };

  // The pipeline: kStages - 1 steps in flight ahead of the one being multiplied. A group is
  // committed every step, empty or not, so wait_group counts steps. The first steps' weights go
  // out before the gathered rows are looked up (group 0 holds them all; step s is whole once
  // group s is).
  const int64_t num_k_tiles = (args.k + C::kTileK - 1) / C::kTileK;
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < num_k_tiles) load_b(s, s);
  }
#pragma unroll
  for (int v = 0; v < kChunksA; ++v) {
    const int64_t row = row0 + chunk_row + v * kRowsPerPass;
    int64_t source = -1;
    if (row < args.num_rows) {
      if (args.a_rows == nullptr) {
        source = row;
      } else {
        const int32_t entry = args.a_rows[row];
        source = entry < 0 ? -1 : entry / args.a_row_divisor;
      }
    }
    a_src[v] = source >= 0 ? args.a + source * args.lda + chunk_col : nullptr;
  }
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < num_k_tiles) load_a(s, s);
    ptx::copy_async_commit();
  }
  for (int64_t kt = 0; kt < num_k_tiles; ++kt) {
    ptx::copy_async_wait<C::kStages - 2>();
    // Step kt is in shared memory for every thread, and every warp is done with step kt - 1,
    // whose stage the next load overwrites.
    __syncthreads();
    const int64_t next = kt + C::kStages - 1;
    if (next < num_k_tiles) {
      load_a(static_cast<int>(next % C::kStages), next);
      load_b(static_cast<int>(next % C::kStages), next);
    }
    ptx::copy_async_commit();
    multiply_stage(static_cast<int>(kt % C::kStages));
  }
  ptx::copy_async_wait<0>();

  // Accumulator element e of fragment (i, j): row lane / 4 (+ 8 for e >= 2), column
  // 2 * (lane % 4) (+ 1 for odd e) of the fragment.
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(args.out);
#pragma unroll
  for (int i = 0; i < C::kFragsM; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = row0 + warp_m0 + i * 16 + lane / 4 + half * 8;
      if (row >= args.num_rows) continue;
      __nv_bfloat16* out_row = out + row * args.ldo;
      if constexpr (kSwiGlu) {
#pragma unroll
        for (int j = 0; j < C::kFragsN; j += 2) {
          const int64_t col = col0 + (warp_n0 + j * 8) / 2 + (lane % 4) * 2;
          float value[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float gate = acc[i][j][half * 2 + e];
            const float up = acc[i][j + 1][half * 2 + e];
            value[e] = gate / (1.0f + expf(-gate)) * up;
          }
          detail::store_pair(out_row + col, col, args.n, value[0], value[1]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < C::kFragsN; ++j) {
          const int64_t col = col0 + warp_n0 + j * 8 + (lane % 4) * 2;
          detail::store_pair(out_row + col, col, args.n, acc[i][j][half * 2],
                             acc[i][j][half * 2 + 1]);
        }
      }
    }
  }
}

// Whether pipelined_launch can run `args`: bf16 weights, 16-byte vectors everywhere.
inline bool pipelined_supported(const GemmArgs& args, ElementType weight_type) {
  const auto aligned = [](const void* pointer) {
    return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
  };
  return weight_type == ElementType::kBF16 && args.k % 8 == 0 && args.lda % 8 == 0 &&
         args.n % 8 == 0 && args.ldo % 8 == 0 && args.b_group_stride % 8 == 0 && aligned(args.a) &&
         aligned(args.b) && aligned(args.out);
}

// `num_m_tiles` tiles of Config::kTileM rows (an upper bound when args.num_tiles is set). static:
// each translation unit compiles its own copy of the kernel (whole-program CUDA compilation), so
// each keeps its own record of the devices where that copy may use the shared memory it asks.
template <typename Config, Epilogue kEpilogue>
static cudaError_t pipelined_launch(const GemmArgs& args, int64_t num_m_tiles,
                                    cudaStream_t stream) {
  if (num_m_tiles == 0 || args.n == 0) return cudaSuccess;
  if (num_m_tiles > 65535) return cudaErrorInvalidValue;
  const auto kernel = pipelined_gemm_kernel<Config, kEpilogue>;
  // Shared memory above the 48 KiB default, allowed once per device (the attribute is per device).
  static std::atomic<uint64_t> allowed_devices{0};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit == 0 || (allowed_devices.load(std::memory_order_relaxed) & bit) == 0) {
    status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  Config::kSharedBytes);
    if (status != cudaSuccess) return status;
    allowed_devices.fetch_or(bit, std::memory_order_relaxed);
  }
  constexpr int64_t cols = kEpilogue == Epilogue::kSwiGlu ? Config::kTileN / 2 : Config::kTileN;
  const dim3 grid(static_cast<unsigned>((args.n + cols - 1) / cols),
                  static_cast<unsigned>(num_m_tiles));
  kernel<<<grid, Config::kThreads, Config::kSharedBytes, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace tidal::cuda::gemm
