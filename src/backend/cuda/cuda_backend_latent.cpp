// CudaBackend's ops for multi-head latent attention (DeepSeek-V2/V3): the interleaved-pair
// rotary embedding, attention over the latent cache, and the per-head linear maps that absorb
// the key and value up-projections. Shape and dtype checks, then kernels/cuda and cuBLAS on the
// backend's stream; nothing here allocates or synchronises.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_op_checks.h"
#include "kernels/cuda/latent_attention.cuh"
#include "kernels/cuda/rope.cuh"

namespace tidal {
namespace {

using cuda_ops::bf16_ptr;
using cuda_ops::expect_bf16;
using cuda_ops::expect_dtype;
using cuda_ops::expect_i32;
using cuda_ops::to_int;

bool aligned_16(const Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data) % 16 == 0;
}

}  // namespace

void CudaBackend::rope_pairs(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                             float factor) {
  expect_bf16(x, "rope_pairs input");
  expect_i32(positions, "positions");
  expect_dtype(inv_freq, DType::kF32, "rope_pairs inverse frequencies");
  TIDAL_CHECK(x.shape.size() == 3 && x.dim(0) == positions.num_elements() && x.dim(2) % 2 == 0,
              "rope_pairs: x must be [tokens, heads, dim] with an even dim and one position per "
              "token");
  TIDAL_CHECK(inv_freq.num_elements() * 2 == x.dim(2), "rope_pairs: ", inv_freq.num_elements(),
              " inverse frequencies for dim ", x.dim(2));
  activate();
  TIDAL_CUDA_CHECK(cuda::rope_pairs_bf16(bf16_ptr(x), positions.as<int32_t>(), inv_freq.as<float>(),
                                         x.dim(0), x.dim(1), x.dim(2), factor, stream_));
}

void CudaBackend::latent_attention(const Tensor& q_latent, const Tensor& q_rope,
                                   const KvCacheLayer& cache, const AttentionInputs& inputs,
                                   float scale, const Tensor& out) {
  expect_bf16(q_latent, "latent_attention q_latent");
  expect_bf16(q_rope, "latent_attention q_rope");
  expect_bf16(out, "latent_attention output");
  expect_bf16(cache.key, "latent cache");
  expect_bf16(cache.value, "latent cache rotary keys");
  expect_i32(inputs.query_start, "query_start");
  expect_i32(inputs.context_lens, "context_lens");
  expect_i32(inputs.block_tables, "block_tables");
  TIDAL_CHECK(cache.key.shape.size() == 4 && cache.value.shape.size() == 4 &&
                  cache.key.dim(2) == 1 && cache.value.dim(2) == 1 &&
                  cache.key.dim(0) == cache.value.dim(0) && cache.key.dim(1) == cache.value.dim(1),
              "latent_attention: the cache must be latents [num_blocks, block_size, 1, L] and "
              "rotary keys [num_blocks, block_size, 1, R]");
  const int64_t latent_dim = cache.key.dim(3);
  const int64_t rope_dim = cache.value.dim(3);
  TIDAL_CHECK(
      q_latent.shape.size() == 3 && q_latent.dim(2) == latent_dim && out.shape == q_latent.shape,
      "latent_attention: q_latent and out must be [tokens, heads, ", latent_dim, "]");
  TIDAL_CHECK(q_rope.shape.size() == 3 && q_rope.dim(0) == q_latent.dim(0) &&
                  q_rope.dim(1) == q_latent.dim(1) && q_rope.dim(2) == rope_dim,
              "latent_attention: q_rope must be [tokens, heads, ", rope_dim, "]");
  TIDAL_CHECK(cuda::latent_attention_supports(latent_dim, rope_dim),
              "latent_attention on CUDA takes a latent width that is a multiple of 32 up to ",
              cuda::kMaxLatentDim, " and a rotary width that is a multiple of 8 up to ",
              cuda::kMaxLatentRopeDim, ", got ", latent_dim, " and ", rope_dim);
  // The cache tiles are copied 16 bytes at a time.
  TIDAL_CHECK(aligned_16(cache.key) && aligned_16(cache.value),
              "latent_attention: the cache pools must be 16-byte aligned");
  TIDAL_CHECK(inputs.num_seqs == 0 || inputs.block_tables.shape.size() == 2,
              "block_tables must be [num_seqs, max_blocks_per_seq]");
  TIDAL_CHECK(q_latent.dim(0) <= INT32_MAX, "latent_attention: ", q_latent.dim(0),
              " tokens exceed the grid");
  activate();
  TIDAL_CUDA_CHECK(cuda::latent_attention_bf16(
      {.q_latent = bf16_ptr(q_latent),
       .q_rope = bf16_ptr(q_rope),
       .latents = bf16_ptr(cache.key),
       .rope_keys = bf16_ptr(cache.value),
       .block_size = cache.key.dim(1),
       .latent_dim = latent_dim,
       .rope_dim = rope_dim,
       .num_tokens = q_latent.dim(0),
       .num_heads = q_latent.dim(1),
       .query_start = inputs.query_start.as<int32_t>(),
       .context_lens = inputs.context_lens.as<int32_t>(),
       .block_tables = inputs.block_tables.as<int32_t>(),
       .num_seqs = inputs.num_seqs,
       .max_blocks_per_seq = inputs.num_seqs == 0 ? 0 : inputs.block_tables.dim(1),
       .max_context_len = inputs.max_context_len,
       .scale = scale,
       .out = bf16_ptr(out)},
      stream_));
}

void CudaBackend::head_linear(const Tensor& x, const Tensor& weight, bool weight_k_major,
                              const Tensor& out) {
  expect_bf16(x, "head_linear input");
  expect_bf16(weight, "head_linear weight");
  expect_bf16(out, "head_linear output");
  TIDAL_CHECK(x.shape.size() == 3 && weight.shape.size() == 3 && out.shape.size() == 3,
              "head_linear: x [tokens, heads, k], weight [heads, n, k] or [heads, k, n], out "
              "[tokens, heads, n]");
  const int64_t tokens = x.dim(0);
  const int64_t heads = x.dim(1);
  const int64_t in = x.dim(2);
  const int64_t n = weight_k_major ? weight.dim(2) : weight.dim(1);
  const int64_t weight_in = weight_k_major ? weight.dim(1) : weight.dim(2);
  TIDAL_CHECK(weight.dim(0) == heads && weight_in == in, "head_linear: weight of ",
              weight_k_major ? "[heads, k, n]" : "[heads, n, k]", " = [", weight.dim(0), ", ",
              weight.dim(1), ", ", weight.dim(2), "] for ", heads, " heads of width ", in);
  TIDAL_CHECK(out.dim(0) == tokens && out.dim(1) == heads && out.dim(2) == n,
              "head_linear: output must be [", tokens, ", ", heads, ", ", n, "]");
  if (tokens == 0 || heads == 0 || n == 0) return;
  if (in == 0) {  // an empty sum (cuBLAS may leave C unwritten for k = 0)
    fill_zero(out);
    return;
  }
  activate();
  // Per head h, row-major out_h[T, N] (rows H N apart) = x_h[T, K] (rows H K apart) times
  // w_h^T or w_h: column-major out_h^T = op(w_h) x_h^T, with w_h [N, K] row-major read as a K x N
  // column-major matrix to transpose, or w_h [K, N] row-major as the N x K one itself.
  const float alpha = 1.0f;
  const float beta = 0.0f;
  TIDAL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cublas_, weight_k_major ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, to_int(n, "head_linear n"),
      to_int(tokens, "head_linear tokens"), to_int(in, "head_linear k"), &alpha, weight.data,
      CUDA_R_16BF, to_int(weight_k_major ? n : in, "head_linear lda"), n * in, x.data, CUDA_R_16BF,
      to_int(heads * in, "head_linear ldb"), in, &beta, out.data, CUDA_R_16BF,
      to_int(heads * n, "head_linear ldc"), n, to_int(heads, "head_linear heads"),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace tidal
