// make_backend: the one place that knows which backends were compiled in.
#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#ifdef TIDAL_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace tidal {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef TIDAL_WITH_CUDA
    const int count = cuda_device_count();
    TIDAL_FAIL("device '", device, "': ", count, " CUDA device(s) found, but the CUDA backend's ",
               "forward pass is not implemented yet (use --device cpu)");
#else
    TIDAL_FAIL("device '", device,
               "': this build has no CUDA backend (configure with the 'cuda' preset)");
#endif
  }
  TIDAL_FAIL("unknown device '", device, "' (expected cpu, cuda or cuda:N)");
}

}  // namespace tidal
