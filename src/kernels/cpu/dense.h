// CPU reference kernels for the dense ops: linear, embedding, RMSNorm, add (and the two fused),
// SwiGLU, row gather.
// Activations are f32; weights are F32/F16/BF16 given by their DType (linear's also F8_E4M3 with
// block scales, kernels/cpu/element.h's WeightMatrix).
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace tidal::cpu {

struct WeightMatrix;

// out[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n]) for w [out_features = rows, in_features = cols].
void linear(const float* x, int64_t num_tokens, const WeightMatrix& weight, const void* bias,
            DType bias_dtype, float* out);

// A linear map per head: out[t, h, :] = x[t, h, :] . weight[h]^T for weight [heads, n, k], or
// x[t, h, :] . weight[h] for weight [heads, k, n] when `weight_k_major`; the same dot products as
// linear().
void head_linear(const float* x, int64_t num_tokens, int64_t num_heads, int64_t k,
                 const void* weight, DType weight_dtype, int64_t n, bool weight_k_major,
                 float* out);
void embedding(const void* table, DType table_dtype, int64_t vocab_size, int64_t hidden,
               const int32_t* ids, int64_t num_tokens, float* out);
// Hugging Face RMSNorm: weight * (x / sqrt(mean(x^2) + eps)), per row of `width`.
void rms_norm(const float* x, int64_t num_rows, int64_t width, const void* weight,
              DType weight_dtype, float eps, float* out);
void add(const float* a, const float* b, int64_t count, float* out);
// Per row: out = a + sigmoid(gate_logits[r]) * b, the sigmoid as torch computes it in f32.
void add_sigmoid_gated(const float* a, const float* b, const float* gate_logits, int64_t num_rows,
                       int64_t width, float* out);
// Per row: residual += x, then out = rms_norm(residual) * weight; the same arithmetic as add then
// rms_norm, a row at a time while it is in cache. out may alias x, not residual.
void add_rms_norm(float* residual, const float* x, int64_t num_rows, int64_t width,
                  const void* weight, DType weight_dtype, float eps, float* out);
// out[t, i] = silu(gate_up[t, i]) * gate_up[t, width + i].
void silu_and_mul(const float* gate_up, int64_t num_tokens, int64_t width, float* out);
void gather_rows(const float* x, int64_t width, int64_t num_src_rows, const int32_t* row_ids,
                 int64_t num_rows, float* out);

}  // namespace tidal::cpu
