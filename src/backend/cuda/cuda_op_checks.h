// Dtype checks and conversions the CudaBackend's op files share (cuda_backend.cpp and
// cuda_backend_latent.cpp): each throws tidal::Error naming what it checked.
#pragma once

#include <cuda_bf16.h>

#include <climits>
#include <cstdint>

#include "backend/backend.h"
#include "common/error.h"

namespace tidal::cuda_ops {

inline void expect_dtype(const Tensor& tensor, DType dtype, const char* what) {
  TIDAL_CHECK(tensor.dtype == dtype, what, " must be ", dtype_name(dtype),
              " on the CUDA backend, got ", dtype_name(tensor.dtype));
}
inline void expect_bf16(const Tensor& tensor, const char* what) {
  expect_dtype(tensor, DType::kBF16, what);
}
inline void expect_i32(const Tensor& tensor, const char* what) {
  expect_dtype(tensor, DType::kI32, what);
}

inline int to_int(int64_t value, const char* what) {
  TIDAL_CHECK(value >= 0 && value <= INT_MAX, what, " of ", value, " exceeds what cuBLAS takes");
  return static_cast<int>(value);
}

inline __nv_bfloat16* bf16_ptr(const Tensor& tensor) {
  return tensor.as<__nv_bfloat16>();
}

}  // namespace tidal::cuda_ops
