// WeightStore: zero-copy views on the CPU backend, uploads elsewhere.
#include "model/weight_store.h"

namespace tidal {

Tensor WeightStore::get(const std::string& name, std::initializer_list<int64_t> shape) {
  const TensorInfo& info = checkpoint_.tensor(name, shape);
  Tensor tensor{
      .data = nullptr, .dtype = *info.dtype, .shape = shape, .device = backend_->device()};
  if (backend_->shares_host_memory()) {
    // Read-only mapping: ops never write weights, so dropping const here is safe.
    tensor.data = const_cast<std::byte*>(info.data.data());
    return tensor;
  }
  owned_.push_back(backend_->allocate(info.data.size()));
  tensor.data = owned_.back().data();
  backend_->copy_from_host(tensor.data, info.data.data(), info.data.size());
  bytes_copied_ += info.data.size();
  return tensor;
}

Tensor WeightStore::allocate(DType dtype, std::initializer_list<int64_t> shape) {
  Tensor tensor{.data = nullptr, .dtype = dtype, .shape = shape, .device = backend_->device()};
  owned_.push_back(backend_->allocate(tensor.num_bytes()));
  tensor.data = owned_.back().data();
  return tensor;
}

void WeightStore::copy_into(const Tensor& dst, size_t offset, const TensorInfo& src) {
  copy_slice_into(dst, offset, src, 0, src.data.size());
}

void WeightStore::copy_slice_into(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                                  size_t src_offset, size_t bytes) {
  TIDAL_CHECK(src.dtype == dst.dtype, src.file, ": tensor '", src.name, "' is ", src.dtype_name,
              " but the other weights of its layer are ", dtype_name(dst.dtype));
  TIDAL_CHECK(src_offset + bytes <= src.data.size() && dst_offset + bytes <= dst.num_bytes(),
              "weight copy out of bounds");
  backend_->copy_from_host(static_cast<char*>(dst.data) + dst_offset, src.data.data() + src_offset,
                           bytes);
  bytes_copied_ += bytes;
}

}  // namespace tidal
