// Dense ops on the GPU: embedding lookup, residual add, row gather, bias add, and the fallback
// GEMM for weights cuBLAS cannot pair with bf16 activations. Activations are bf16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/element.cuh"

namespace tidal::cuda {

// out[t, :] = table[ids[t], :] rounded to bf16; an id outside [0, vocab_size) gives a zero row
// (a device kernel cannot throw; the backend checks ids it can see).
cudaError_t embedding_bf16(const void* table, ElementType table_type, int64_t vocab_size,
                           int64_t hidden, const int32_t* ids, int64_t num_tokens,
                           __nv_bfloat16* out, cudaStream_t stream);

// out = a + b elementwise in f32, rounded once. out may alias a or b.
cudaError_t add_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t count,
                     __nv_bfloat16* out, cudaStream_t stream);

// out[t, i] = a[t, i] + sigmoid(gate_logits[t]) * b[t, i] in f32, rounded once. out may alias a.
cudaError_t add_sigmoid_gated_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                   const float* gate_logits, int64_t num_rows, int64_t width,
                                   __nv_bfloat16* out, cudaStream_t stream);

// out[r] = x[row_ids[r]] for rows of `row_bytes` bytes (any dtype); an id outside
// [0, num_src_rows) gives a zero row.
cudaError_t gather_rows(const void* x, int64_t row_bytes, int64_t num_src_rows,
                        const int32_t* row_ids, int64_t num_rows, void* out, cudaStream_t stream);

// out[r, n] += bias[n] for out of `num_rows` rows of `width`, f32 or bf16.
cudaError_t add_bias(float* out, int64_t num_rows, int64_t width, const void* bias,
                     ElementType bias_type, cudaStream_t stream);
cudaError_t add_bias(__nv_bfloat16* out, int64_t num_rows, int64_t width, const void* bias,
                     ElementType bias_type, cudaStream_t stream);

// out[t, n] = sum_k x[t, k] * w[n, k], f32 accumulation, weights of any ElementType rounded to
// bf16 on the way into the tensor cores. The path for non-bf16 weights; bf16 goes to cuBLAS.
cudaError_t linear_fallback(const __nv_bfloat16* x, int64_t num_tokens, int64_t in_features,
                            const void* weight, ElementType weight_type, int64_t out_features,
                            float* out, cudaStream_t stream);
cudaError_t linear_fallback(const __nv_bfloat16* x, int64_t num_tokens, int64_t in_features,
                            const void* weight, ElementType weight_type, int64_t out_features,
                            __nv_bfloat16* out, cudaStream_t stream);

}  // namespace tidal::cuda
