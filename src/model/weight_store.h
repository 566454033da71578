// WeightStore: turns checkpoint tensors into device tensors and owns whatever it had to copy. A
// synthetic checkpoint (dummy weights) is filled on the device instead, from counter-based random
// numbers keyed by (seed, tensor name, element index), so any slice of a tensor (an expert in
// whatever slot, on whatever rank) gets the same values as the whole tensor would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/loader/safetensors.h"

namespace tidal {

class WeightStore {
 public:
  WeightStore(Backend& backend, Checkpoint checkpoint)
      : backend_(&backend), checkpoint_(std::move(checkpoint)) {}

  const Checkpoint& checkpoint() const { return checkpoint_; }
  Backend& backend() const { return *backend_; }

  // The tensor, checked against `shape`, on the device (in place where the backend can read
  // host memory). Throws tidal::Error naming the tensor and file on any mismatch.
  Tensor get(const std::string& name, std::initializer_list<int64_t> shape);
  // A device buffer of `shape` and `dtype` owned by the store (for slot-ordered expert weights).
  Tensor allocate(DType dtype, std::initializer_list<int64_t> shape);
  // Copies a checkpoint tensor into `dst` at byte `offset` (same dtype required).
  void copy_into(const Tensor& dst, size_t offset, const TensorInfo& src);
  // Copies `bytes` from byte `src_offset` of a checkpoint tensor into `dst` at `dst_offset`.
  void copy_slice_into(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                       size_t src_offset, size_t bytes);

  size_t bytes_copied() const { return bytes_copied_; }

 private:
  // Fills `bytes` of `dst` from byte `dst_offset` with the dummy values of `src`'s elements from
  // byte `src_offset` on.
  void fill_dummy(const Tensor& dst, size_t dst_offset, const TensorInfo& src, size_t src_offset,
                  size_t bytes);

  Backend* backend_;
  Checkpoint checkpoint_;
  std::vector<DeviceBuffer> owned_;
  size_t bytes_copied_ = 0;
};

}  // namespace tidal
