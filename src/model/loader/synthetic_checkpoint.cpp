// Checkpoint::synthetic: tensor descriptions over an inaccessible address reservation.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "model/loader/safetensors.h"

namespace tidal {

Checkpoint Checkpoint::synthetic(const std::vector<SyntheticTensor>& tensors, uint64_t seed) {
  Checkpoint checkpoint;
  checkpoint.directory_ = cat("dummy weights (seed ", seed, ")");
  checkpoint.synthetic_seed_ = seed;
  size_t largest = 1;
  for (const SyntheticTensor& spec : tensors) {
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    largest = std::max(largest, static_cast<size_t>(count) * dtype_size(spec.dtype));
  }
  // Address space only: PROT_NONE with no reserve costs no memory, whatever the size.
  void* base =
      ::mmap(nullptr, largest, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    TIDAL_FAIL("dummy weights: cannot reserve ", largest,
               " bytes of address space: ", std::strerror(errno));
  }
  checkpoint.reservation_ =
      std::shared_ptr<void>(base, [largest](void* address) { ::munmap(address, largest); });
  for (const SyntheticTensor& spec : tensors) {
    auto info = std::make_unique<TensorInfo>();
    info->name = spec.name;
    info->dtype_name = std::string(dtype_name(spec.dtype));
    info->dtype = spec.dtype;
    info->shape = spec.shape;
    info->data = {static_cast<const std::byte*>(base),
                  static_cast<size_t>(info->num_elements()) * dtype_size(spec.dtype)};
    info->file = checkpoint.directory_;
    const auto [it, inserted] = checkpoint.index_.emplace(spec.name, info.get());
    TIDAL_CHECK(inserted, "dummy weights: tensor '", spec.name, "' named twice");
    checkpoint.synthetic_tensors_.push_back(std::move(info));
  }
  return checkpoint;
}

}  // namespace tidal
