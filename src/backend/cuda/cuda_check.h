// CUDA and cuBLAS status checks: a failure throws tidal::Error naming the call, the file, the
// line and the device, so a caller (an elastic rank) can report it instead of the process
// aborting.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/error.h"

namespace tidal {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                   int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line);

}  // namespace tidal

#define TIDAL_CUDA_CHECK(call)                                                  \
  do {                                                                          \
    const cudaError_t tidal_cuda_status_ = (call);                              \
    if (tidal_cuda_status_ != cudaSuccess) [[unlikely]]                         \
      ::tidal::throw_cuda_error(tidal_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define TIDAL_CUBLAS_CHECK(call)                                                    \
  do {                                                                              \
    const cublasStatus_t tidal_cublas_status_ = (call);                             \
    if (tidal_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                 \
      ::tidal::throw_cublas_error(tidal_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)
