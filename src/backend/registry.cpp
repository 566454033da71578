// make_backend: the one place that knows which backends were compiled in.
#include <cstdlib>
#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#ifdef TIDAL_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace tidal {
namespace {

// "cuda" is device 0; "cuda:N" is device N.
int cuda_index(const std::string& device) {
  if (device == "cuda") return 0;
  const std::string digits = device.substr(5);
  TIDAL_CHECK(!digits.empty() && digits.size() <= 4 &&
                  digits.find_first_not_of("0123456789") == std::string::npos,
              "device '", device, "': expected cuda or cuda:N");
  return std::stoi(digits);
}

}  // namespace

bool is_cuda_device(const std::string& device) {
  return device == "cuda" || device.rfind("cuda:", 0) == 0;
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") {
    // Tests only: a CPU backend that acts as a device of this many bytes in every process that
    // makes one (rank processes too), so that sizing from device memory runs end to end.
    const char* limit = std::getenv("TIDAL_TEST_CPU_MEMORY_LIMIT");
    return std::make_unique<CpuBackend>(CpuBackendOptions{
        .memory_limit_bytes = limit != nullptr ? std::strtoull(limit, nullptr, 10) : 0});
  }
  if (is_cuda_device(device)) {
    const int index = cuda_index(device);
#ifdef TIDAL_WITH_CUDA
    return std::make_unique<CudaBackend>(index);
#else
    TIDAL_FAIL("device '", device, "' (index ", index,
               "): this build has no CUDA backend (configure with the 'cuda' preset)");
#endif
  }
  TIDAL_FAIL("unknown device '", device, "' (expected cpu, cuda or cuda:N)");
}

}  // namespace tidal
