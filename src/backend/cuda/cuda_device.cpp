// Device queries through the CUDA runtime.
#include "backend/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include "common/error.h"

namespace tidal {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

CudaDeviceInfo cuda_device_info(int index) {
  cudaDeviceProp properties{};
  const cudaError_t status = cudaGetDeviceProperties(&properties, index);
  if (status != cudaSuccess) {
    TIDAL_FAIL("cuda:", index, ": ", cudaGetErrorString(status));
  }
  return {.index = index,
          .name = properties.name,
          .compute_major = properties.major,
          .compute_minor = properties.minor,
          .total_memory_bytes = properties.totalGlobalMem};
}

}  // namespace tidal
