// CUDA devices as tidal sees them: count and properties, with CUDA errors turned into tidal::Error.
#pragma once

#include <cstddef>
#include <string>

namespace tidal {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  size_t total_memory_bytes = 0;
};

// 0 when the driver reports no device (a machine without a GPU is not an error here).
int cuda_device_count();
// Throws tidal::Error naming the device and the CUDA error.
CudaDeviceInfo cuda_device_info(int index);

}  // namespace tidal
