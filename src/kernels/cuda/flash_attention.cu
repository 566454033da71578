// The tiled prefill attention: 4 warps, each owning 16 of the block's 64 query rows, so the
// softmax and the O update of a row never leave its warp; only the K/V tiles are shared.
#include <mma.h>

#include <cmath>

#include "kernels/cuda/flash_attention.cuh"

namespace tidal::cuda {
namespace {

using namespace nvcuda;

constexpr int kRows = 64;  // queries per block
constexpr int kKeys = 64;  // keys per tile
constexpr int kDim = static_cast<int>(kFlashMaxHeadDim);
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kPad = 8;              // bf16 rows stay 16-byte aligned and banks staggered
constexpr int kPadF = 4;             // f32 rows
constexpr int kLdh = kDim + kPad;    // Q, K, V rows
constexpr int kLdp = kKeys + kPad;   // P rows
constexpr int kLds = kKeys + kPadF;  // S rows
constexpr int kLdo = kDim + kPadF;   // O rows

struct Smem {
  __nv_bfloat16 q[kRows][kLdh];
  __nv_bfloat16 k[kKeys][kLdh];
  __nv_bfloat16 v[kKeys][kLdh];
  __nv_bfloat16 p[kRows][kLdp];
  float s[kRows][kLds];
  float o[kRows][kLdo];
  float row_max[kRows];
  float row_sum[kRows];
  int32_t row_visible[kRows];  // keys row r may see; 0 for rows past the block's queries
};

// Copies `rows` rows of head_dim bf16 (zero-padded to kDim, zero rows past `valid`) into a tile.
// row_src(r) gives the source row of tile row r.
template <typename RowSource>
__device__ void load_tile(__nv_bfloat16 (*tile)[kLdh], int valid, int head_dim, RowSource row_src) {
  constexpr int kVectors = kDim / 8;
  for (int i = threadIdx.x; i < kRows * kVectors; i += kThreads) {
    const int r = i / kVectors;
    const int c = (i % kVectors) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < valid && c < head_dim) value = *reinterpret_cast<const uint4*>(row_src(r) + c);
    *reinterpret_cast<uint4*>(&tile[r][c]) = value;
  }
}

__global__ void __launch_bounds__(kThreads) flash_attention_kernel(const PagedAttentionParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int64_t head = blockIdx.x;
  const int64_t seq = blockIdx.z;
  const int64_t seq_begin = p.query_start[seq];
  const int64_t num_queries = p.query_start[seq + 1] - seq_begin;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * kRows;  // within the sequence
  if (first >= num_queries) return;
  const int rows = static_cast<int>(num_queries - first < kRows ? num_queries - first : kRows);
  const int64_t context = p.context_lens[seq];
  const int head_dim = static_cast<int>(p.cache.head_dim);
  const int64_t kv_head = head / (p.num_heads / p.cache.num_kv_heads);
  const int64_t kv_width = p.cache.num_kv_heads * p.cache.head_dim;
  const int32_t* table = p.block_tables + seq * p.max_blocks_per_seq;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;

  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    // Query `first + r` sits at position context - num_queries + first + r.
    int64_t visible = r < rows ? context - num_queries + first + r + 1 : 0;
    visible = visible > context ? context : (visible < 0 ? 0 : visible);
    sm.row_visible[r] = static_cast<int32_t>(visible);
    sm.row_max[r] = -INFINITY;
    sm.row_sum[r] = 0.0f;
  }
  for (int i = threadIdx.x; i < kRows * kLdo; i += kThreads) (&sm.o[0][0])[i] = 0.0f;
  const __nv_bfloat16* q_base = p.q + ((seq_begin + first) * p.num_heads + head) * head_dim;
  load_tile(sm.q, rows, head_dim, [&](int r) { return q_base + r * p.num_heads * head_dim; });
  __syncthreads();
  int64_t keys_end = 0;  // the most keys any row of the block sees
  for (int r = 0; r < rows; ++r)
    keys_end = sm.row_visible[r] > keys_end ? sm.row_visible[r] : keys_end;

  const int row0 = warp * 16;
  for (int64_t k0 = 0; k0 < keys_end; k0 += kKeys) {
    const int valid = static_cast<int>(keys_end - k0 < kKeys ? keys_end - k0 : kKeys);
    const auto slot_of = [&](int r) {
      const int64_t j = k0 + r;
      return static_cast<int64_t>(table[j / p.cache.block_size]) * p.cache.block_size +
             j % p.cache.block_size;
    };
    load_tile(sm.k, valid, head_dim,
              [&](int r) { return p.cache.key + slot_of(r) * kv_width + kv_head * head_dim; });
    load_tile(sm.v, valid, head_dim,
              [&](int r) { return p.cache.value + slot_of(r) * kv_width + kv_head * head_dim; });
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag[kKeys / 16];
    for (int n = 0; n < kKeys / 16; ++n) wmma::fill_fragment(s_frag[n], 0.0f);
    for (int d = 0; d < head_dim; d += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
      wmma::load_matrix_sync(a, &sm.q[row0][d], kLdh);
      for (int n = 0; n < kKeys / 16; ++n) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(b, &sm.k[n * 16][d], kLdh);
        wmma::mma_sync(s_frag[n], a, b, s_frag[n]);
      }
    }
    for (int n = 0; n < kKeys / 16; ++n) {
      wmma::store_matrix_sync(&sm.s[row0][n * 16], s_frag[n], kLds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax, one row at a time across the warp (two keys a lane).
    for (int r = row0; r < row0 + 16; ++r) {
      const int64_t visible = sm.row_visible[r];
      float score[2];
      float tile_max = -INFINITY;
      for (int u = 0; u < 2; ++u) {
        const int c = lane + 32 * u;
        score[u] = k0 + c < visible ? sm.s[r][c] * p.scale : -INFINITY;
        tile_max = fmaxf(tile_max, score[u]);
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      }
      const float old_max = sm.row_max[r];
      const float new_max = fmaxf(old_max, tile_max);
      // A row that has seen no key yet (or never will) keeps max -inf: nothing to add or scale.
      const bool empty = new_max == -INFINITY;
      const float correction = empty ? 1.0f : expf(old_max - new_max);
      float tile_sum = 0.0f;
      for (int u = 0; u < 2; ++u) {
        const float prob = empty ? 0.0f : expf(score[u] - new_max);
        const __nv_bfloat16 rounded = __float2bfloat16(prob);
        sm.p[r][lane + 32 * u] = rounded;
        tile_sum += __bfloat162float(rounded);  // the sum of exactly what PV multiplies
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, offset);
      }
      for (int c = lane; c < kDim; c += 32) sm.o[r][c] *= correction;
      __syncwarp();
      if (lane == 0) {
        sm.row_max[r] = new_max;
        sm.row_sum[r] = sm.row_sum[r] * correction + tile_sum;
      }
    }
    __syncwarp();

    // O += P V for this warp's rows.
    for (int n = 0; n < head_dim; n += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_frag;
      wmma::load_matrix_sync(o_frag, &sm.o[row0][n], kLdo, wmma::mem_row_major);
      for (int kk = 0; kk < kKeys; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, &sm.p[row0][kk], kLdp);
        wmma::load_matrix_sync(b, &sm.v[kk][n], kLdh);
        wmma::mma_sync(o_frag, a, b, o_frag);
      }
      wmma::store_matrix_sync(&sm.o[row0][n], o_frag, kLdo, wmma::mem_row_major);
    }
    __syncthreads();  // the next tile overwrites K and V
  }

  for (int i = threadIdx.x; i < rows * head_dim; i += kThreads) {
    const int r = i / head_dim;
    const int c = i % head_dim;
    const float total = sm.row_sum[r];
    const float value = total > 0.0f ? sm.o[r][c] / total : 0.0f;
    p.out[((seq_begin + first + r) * p.num_heads + head) * head_dim + c] = __float2bfloat16(value);
  }
}

}  // namespace

bool flash_attention_supports(const PagedAttentionParams& params) {
  return params.cache.head_dim % 16 == 0 && params.cache.head_dim <= kFlashMaxHeadDim &&
         params.cache.num_kv_heads > 0 && params.num_heads % params.cache.num_kv_heads == 0;
}

cudaError_t flash_attention_bf16(const PagedAttentionParams& params, int64_t max_query_len,
                                 cudaStream_t stream) {
  if (params.num_tokens == 0 || params.num_heads == 0 || params.num_seqs == 0) return cudaSuccess;
  if (!flash_attention_supports(params) || params.num_seqs > 65535 || max_query_len <= 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t tiles = (max_query_len + kRows - 1) / kRows;
  if (tiles > 65535) return cudaErrorInvalidValue;
  const size_t smem = sizeof(Smem);
  const cudaError_t status = cudaFuncSetAttribute(
      flash_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (status != cudaSuccess) return status;
  // Heads fastest: the query heads of one KV head run side by side and share its tiles in L2.
  const dim3 grid(static_cast<unsigned>(params.num_heads), static_cast<unsigned>(tiles),
                  static_cast<unsigned>(params.num_seqs));
  flash_attention_kernel<<<grid, kThreads, smem, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
