// A tiled bf16 tensor-core GEMM (WMMA, f32 accumulation) shared by the dense fallback and the MoE
// experts: rows may be gathered through an index, weights may be F32/F16/BF16 (rounded to bf16
// in shared memory), and M tiles may each use another weight matrix (a group), which makes it a
// grouped GEMM over expert slots in one launch. bf16 weights take a 16-byte-load path whose next
// K step is loaded into registers while the current one multiplies. The MoE experts with bf16
// weights run moe_gemm.cuh's pipelined mma.sync kernel on these arguments instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/element.cuh"

namespace tidal::cuda::gemm {

constexpr int kBlockM = 64;
constexpr int kBlockN = 64;
constexpr int kBlockK = 32;
constexpr int kThreads = 128;  // 4 warps in a 2 x 2 grid, each 32 x 32 of the tile
constexpr int kPadK = 8;       // keeps rows 16-byte aligned for WMMA and staggers banks
constexpr int kPadC = 4;

enum class Epilogue {
  kStore,   // out[row, col] = acc
  kSwiGlu,  // out[row, col] = silu(acc_gate) * acc_up; the tile computes both halves
};

struct GemmArgs {
  const __nv_bfloat16* a = nullptr;  // activations, rows of `k` with stride lda
  int64_t lda = 0;
  // Optional gather: padded row r reads a[a_rows[r] / a_row_divisor]; a negative entry is a zero
  // row. Null: row r reads a[r].
  const int32_t* a_rows = nullptr;
  int32_t a_row_divisor = 1;
  int64_t num_rows = 0;                  // rows of the output (the padded row space when grouped)
  const void* b = nullptr;               // weights [groups][n_total][k], row-major
  int64_t b_group_stride = 0;            // elements between groups
  const int32_t* tile_groups = nullptr;  // group of each launched M tile; null: group 0
  const int32_t* num_tiles = nullptr;    // device count of live M tiles; null: all
  int64_t n = 0;                         // output columns
  int64_t k = 0;
  int64_t up_offset = 0;  // kSwiGlu: weight row of up column c is up_offset + c
  void* out = nullptr;    // [num_rows, ldo] of OutT
  int64_t ldo = 0;
};

template <typename W, typename OutT, Epilogue kEpilogue>
__global__ void __launch_bounds__(kThreads) gemm_kernel(const GemmArgs args) {
  using namespace nvcuda;
  __shared__ __align__(32) __nv_bfloat16 a_tile[kBlockM][kBlockK + kPadK];
  __shared__ __align__(32) __nv_bfloat16 b_tile[kBlockN][kBlockK + kPadK];
  __shared__ __align__(32) float c_tile[kBlockM][kBlockN + kPadC];
  __shared__ int64_t a_src[kBlockM];
  __shared__ int64_t b_src[kBlockN];

  const int tile_m = static_cast<int>(blockIdx.y);
  if (args.num_tiles != nullptr && tile_m >= *args.num_tiles) return;
  const int64_t group = args.tile_groups != nullptr ? args.tile_groups[tile_m] : 0;
  const int64_t row0 = static_cast<int64_t>(tile_m) * kBlockM;
  // kSwiGlu tiles own kBlockN / 2 output columns: gate columns then the matching up columns.
  constexpr int kColsPerTile = kEpilogue == Epilogue::kSwiGlu ? kBlockN / 2 : kBlockN;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kColsPerTile;
  const int tid = static_cast<int>(threadIdx.x);

  for (int i = tid; i < kBlockM; i += kThreads) {
    const int64_t row = row0 + i;
    int64_t src = -1;
    if (row < args.num_rows) {
      if (args.a_rows == nullptr) {
        src = row;
      } else {
        const int32_t entry = args.a_rows[row];
        src = entry < 0 ? -1 : entry / args.a_row_divisor;
      }
    }
    a_src[i] = src;
  }
  for (int i = tid; i < kBlockN; i += kThreads) {
    const int64_t col = col0 + (i % kColsPerTile);
    int64_t src = -1;
    if (col < args.n) {
      src = kEpilogue == Epilogue::kSwiGlu && i >= kColsPerTile ? args.up_offset + col : col;
    }
    b_src[i] = src;
  }
  __syncthreads();

  const W* b = static_cast<const W*>(args.b) + group * args.b_group_stride;
  const int warp = tid / 32;
  const int warp_m = warp / 2;
  const int warp_n = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }

  // One K step of the tile product, from the shared tiles.
  const auto multiply_tiles = [&] {
    for (int kk = 0; kk < kBlockK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a_frag[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b_frag[2];
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a_frag[i], &a_tile[warp_m * 32 + i * 16][kk], kBlockK + kPadK);
        // b_tile[n][k] is the k x n operand in column-major order.
        wmma::load_matrix_sync(b_frag[i], &b_tile[warp_n * 32 + i * 16][kk], kBlockK + kPadK);
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
      }
    }
  };

  // bf16 weights with 16-byte aligned rows: 16-byte loads, and the next K step's loads issued
  // before this step's multiply (a register double buffer), so memory and tensor cores overlap.
  // Every 8-element vector is wholly inside K or wholly past it (K is a multiple of 8).
  bool vectorised = false;
  if constexpr (std::is_same_v<W, __nv_bfloat16>) {
    const auto aligned = [](const void* pointer) {
      return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
    };
    vectorised = args.k % 8 == 0 && args.lda % 8 == 0 && args.b_group_stride % 8 == 0 &&
                 aligned(args.a) && aligned(args.b);
  }
  if (vectorised) {
    constexpr int kVectors = kBlockK / 8;                      // 16-byte vectors per tile row
    constexpr int kPerThread = kBlockM * kVectors / kThreads;  // for A; B has as many
    static_assert(kBlockM == kBlockN && kBlockM * kVectors % kThreads == 0);
    uint4 a_next[kPerThread];
    uint4 b_next[kPerThread];
    const auto load = [&](int64_t k0) {
      for (int v = 0; v < kPerThread; ++v) {
        const int i = tid + v * kThreads;
        const int r = i / kVectors;
        const int64_t kk = k0 + (i % kVectors) * 8;
        const int64_t a_row = a_src[r];
        const int64_t b_row = b_src[r];
        a_next[v] = a_row >= 0 && kk < args.k
                        ? *reinterpret_cast<const uint4*>(args.a + a_row * args.lda + kk)
                        : make_uint4(0, 0, 0, 0);
        b_next[v] = b_row >= 0 && kk < args.k
                        ? *reinterpret_cast<const uint4*>(b + b_row * args.k + kk)
                        : make_uint4(0, 0, 0, 0);
      }
    };
    load(0);
    for (int64_t k0 = 0; k0 < args.k; k0 += kBlockK) {
      for (int v = 0; v < kPerThread; ++v) {
        const int i = tid + v * kThreads;
        const int r = i / kVectors;
        const int c = (i % kVectors) * 8;
        *reinterpret_cast<uint4*>(&a_tile[r][c]) = a_next[v];
        *reinterpret_cast<uint4*>(&b_tile[r][c]) = b_next[v];
      }
      __syncthreads();
      if (k0 + kBlockK < args.k) load(k0 + kBlockK);
      multiply_tiles();
      __syncthreads();
    }
  } else {
    const __nv_bfloat16 zero = __float2bfloat16(0.0f);
    for (int64_t k0 = 0; k0 < args.k; k0 += kBlockK) {
      for (int i = tid; i < kBlockM * kBlockK; i += kThreads) {
        const int r = i / kBlockK;
        const int c = i % kBlockK;
        const int64_t kk = k0 + c;
        const int64_t src = a_src[r];
        a_tile[r][c] = src >= 0 && kk < args.k ? args.a[src * args.lda + kk] : zero;
      }
      for (int i = tid; i < kBlockN * kBlockK; i += kThreads) {
        const int r = i / kBlockK;
        const int c = i % kBlockK;
        const int64_t kk = k0 + c;
        const int64_t src = b_src[r];
        b_tile[r][c] = src >= 0 && kk < args.k ? to_bf16(b[src * args.k + kk]) : zero;
      }
      __syncthreads();
      multiply_tiles();
      __syncthreads();
    }
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(&c_tile[warp_m * 32 + i * 16][warp_n * 32 + j * 16], acc[i][j],
                              kBlockN + kPadC, wmma::mem_row_major);
    }
  }
  __syncthreads();

  OutT* out = static_cast<OutT*>(args.out);
  for (int i = tid; i < kBlockM * kColsPerTile; i += kThreads) {
    const int r = i / kColsPerTile;
    const int c = i % kColsPerTile;
    const int64_t row = row0 + r;
    const int64_t col = col0 + c;
    if (row >= args.num_rows || col >= args.n) continue;
    float value = c_tile[r][c];
    if constexpr (kEpilogue == Epilogue::kSwiGlu) {
      const float up = c_tile[r][c + kColsPerTile];
      value = value / (1.0f + expf(-value)) * up;
    }
    store_float(out + row * args.ldo + col, value);
  }
}

// Grid for `num_m_tiles` M tiles (an upper bound when args.num_tiles is set).
template <Epilogue kEpilogue>
inline dim3 grid(const GemmArgs& args, int64_t num_m_tiles) {
  constexpr int64_t cols = kEpilogue == Epilogue::kSwiGlu ? kBlockN / 2 : kBlockN;
  return dim3(static_cast<unsigned>((args.n + cols - 1) / cols),
              static_cast<unsigned>(num_m_tiles));
}

template <typename OutT, Epilogue kEpilogue>
cudaError_t launch(const GemmArgs& args, ElementType weight_type, int64_t num_m_tiles,
                   cudaStream_t stream) {
  if (num_m_tiles == 0 || args.n == 0) return cudaSuccess;
  if (num_m_tiles > 65535) return cudaErrorInvalidValue;
  return dispatch_element(weight_type, [&](auto tag) {
    using W = decltype(tag);
    gemm_kernel<W, OutT, kEpilogue>
        <<<grid<kEpilogue>(args, num_m_tiles), kThreads, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

}  // namespace tidal::cuda::gemm
