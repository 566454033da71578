// The argument check of Backend::sample, shared by every backend so they refuse the same calls
// with the same words.
#pragma once

#include <cstdint>

#include "backend/backend.h"
#include "common/error.h"
#include "kernels/sampling_layout.h"

namespace tidal {

// Throws tidal::Error unless logits are F32 [rows, vocab] with vocab > 0, rows I32
// [rows, kSamplingRowWords] aligned for SamplingRow, out I32 [rows, kSampledTokenWords], and
// banned either empty (data null) or I32 [n].
inline void check_sample_args(const Tensor& logits, const Tensor& rows, const Tensor& banned,
                              const Tensor& out) {
  TIDAL_CHECK(logits.dtype == DType::kF32, "sample: logits must be F32, got ",
              dtype_name(logits.dtype));
  TIDAL_CHECK(rows.dtype == DType::kI32 && out.dtype == DType::kI32,
              "sample: rows and out must be I32, got ", dtype_name(rows.dtype), " and ",
              dtype_name(out.dtype));
  TIDAL_CHECK(logits.shape.size() == 2 && logits.dim(1) > 0, "sample: logits [rows, vocab]");
  const int64_t num_rows = logits.dim(0);
  TIDAL_CHECK(rows.shape.size() == 2 && rows.dim(0) == num_rows && rows.dim(1) == kSamplingRowWords,
              "sample: rows must be [", num_rows, ", ", kSamplingRowWords, "]");
  TIDAL_CHECK(out.shape.size() == 2 && out.dim(0) == num_rows && out.dim(1) == kSampledTokenWords,
              "sample: out must be [", num_rows, ", ", kSampledTokenWords, "]");
  TIDAL_CHECK(reinterpret_cast<uintptr_t>(rows.data) % alignof(SamplingRow) == 0,
              "sample: rows must be aligned to ", alignof(SamplingRow), " bytes");
  TIDAL_CHECK(banned.data == nullptr || (banned.dtype == DType::kI32 && banned.shape.size() == 1),
              "sample: banned ids must be empty or I32 [n]");
}

// The number of banned ids (an empty tensor has none).
inline int64_t num_banned_ids(const Tensor& banned) {
  return banned.data == nullptr ? 0 : banned.num_elements();
}

}  // namespace tidal
