// The thrown side of TIDAL_CUDA_CHECK / TIDAL_CUBLAS_CHECK.
#include "backend/cuda/cuda_check.h"

namespace tidal {
namespace {

std::string current_device() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) return "cuda:?";
  return cat("cuda:", device);
}

}  // namespace

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  throw Error(cat(current_device(), ": ", call, " failed with ", cudaGetErrorName(status), " (",
                  cudaGetErrorString(status), ") at ", file, ":", line));
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw Error(cat(current_device(), ": ", call, " failed with ", cublasGetStatusName(status), " (",
                  cublasGetStatusString(status), ") at ", file, ":", line));
}

}  // namespace tidal
