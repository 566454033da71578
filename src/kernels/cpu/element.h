// Reading weights of any supported dtype as f32, and the fixed-order dot product every CPU
// kernel shares (fixed order makes a row's result independent of the batch around it).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/error.h"

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
