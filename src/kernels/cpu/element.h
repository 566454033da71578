// Reading weights of any supported dtype as f32, and the fixed-order dot product every CPU
// kernel shares (fixed order makes a row's result independent of the batch around it).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/error.h"
#include "common/tensor.h"

namespace tidal::cpu {

// Converts `count` elements of a weight row to f32.
inline void row_to_f32(const void* row, DType dtype, int64_t count, float* out) {
  switch (dtype) {
    case DType::kF32: {
      const auto* in = static_cast<const float*>(row);
      for (int64_t i = 0; i < count; ++i) out[i] = in[i];
      return;
    }
    case DType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < count; ++i) out[i] = bf16_to_f32(in[i]);
      return;
    }
    case DType::kF16: {
      const auto* in = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < count; ++i) out[i] = f16_to_f32(in[i]);
      return;
    }
    default:
      TIDAL_FAIL("weights of dtype ", dtype_name(dtype), " are not supported on CPU");
  }
}

// A weight matrix [rows, cols] as the kernels read it, a row at a time in f32: F32, F16, BF16,
// or F8_E4M3 times its block scales (common/tensor.h), dequantized as the checkpoint defines it,
// fp8 value times scale in f32.
struct WeightMatrix {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  BlockScales scales = {};

  void row(int64_t r, float* out) const {
    const auto* start =
        static_cast<const char*>(data) + static_cast<size_t>(r * cols) * dtype_size(dtype);
    if (dtype != DType::kF8E4M3) return row_to_f32(start, dtype, cols, out);
    TIDAL_CHECK(scales.data != nullptr, "FP8 weights without their block scales");
    const float* block_scales = scales.data + scales.row_block(r) * scales.col_blocks(cols);
    const auto* bits = reinterpret_cast<const uint8_t*>(start);
    for (int64_t c = 0; c < cols; ++c) {
      out[c] = fp8_e4m3_to_f32(bits[c]) * block_scales[c / scales.block_cols];
    }
  }
  // Matrix `index` of a stack of them ([n, rows, cols]) given as its first.
  WeightMatrix matrix(int64_t index) const {
    WeightMatrix next = *this;
    next.data = static_cast<const char*>(data) +
                static_cast<size_t>(index * rows * cols) * dtype_size(dtype);
    if (scales.data != nullptr) next.scales.data += index * scales.per_matrix(rows, cols);
    return next;
  }
};

// Eight independent partial sums: vectorisable without fast-math, and always the same order.
inline float dot(const float* a, const float* b, int64_t count) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += a[i + j] * b[i + j];
  }
  float tail = 0;
  for (; i < count; ++i) tail += a[i] * b[i];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7])) + tail;
}

// Hugging Face RMSNorm of one row: out = w * (in / sqrt(mean(in^2) + eps)). Every norm (plain,
// fused with the residual add, per attention head) goes through this, so they round alike. out
// may alias in.
inline void rms_norm_row(const float* in, int64_t width, const float* w, float eps, float* out) {
  const float mean_square = dot(in, in, width) / static_cast<float>(width);
  const float inv_rms = 1.0f / std::sqrt(mean_square + eps);
  for (int64_t i = 0; i < width; ++i) out[i] = w[i] * (in[i] * inv_rms);
}

}  // namespace tidal::cpu
