// WeightStore: zero-copy views on the CPU backend, uploads elsewhere, device fills for dummy
// weights.
#include "model/weight_store.h"

#include "common/counter_random.h"

namespace tidal {
namespace {

// Dummy values small enough that activations stay finite through any number of layers: norm
// weights near 1 (RMSNorm keeps each layer's input at unit scale), every other weight in
// [-2^-5, 2^-5) (std ~0.018, about Hugging Face's initializer_range of 0.02).
RandomFill dummy_fill(const TensorInfo& tensor, uint64_t seed, int64_t first_index) {
  const bool is_norm = tensor.name.ends_with("norm.weight");
  return {.seed = counter_random::hash_name(tensor.name.c_str(), seed),
          .first_index = first_index,
          .center = is_norm ? 1.0f : 0.0f,
          .half_width = is_norm ? 0.0625f : 0.03125f};
}

}  // namespace

Tensor WeightStore::get(const std::string& name, std::initializer_list<int64_t> shape) {
  const TensorInfo& info = checkpoint_.tensor(name, shape);
  Tensor tensor{
      .data = nullptr, .dtype = *info.dtype, .shape = shape, .device = backend_->device()};
  if (backend_->shares_host_memory() && !checkpoint_.is_synthetic()) {
    // Read-only mapping: ops never write weights, so dropping const here is safe.
    tensor.data = const_cast<std::byte*>(info.data.data());
    return tensor;
  }
  owned_.push_back(backend_->allocate(info.data.size()));
  tensor.data = owned_.back().data();
  if (checkpoint_.is_synthetic()) {
    fill_dummy(tensor, 0, info, 0, info.data.size());
    return tensor;
  }
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
  if (checkpoint_.is_synthetic()) {
    fill_dummy(dst, dst_offset, src, src_offset, bytes);
    return;
  }
  backend_->copy_from_host(static_cast<char*>(dst.data) + dst_offset, src.data.data() + src_offset,
                           bytes);
  bytes_copied_ += bytes;
}

void WeightStore::fill_dummy(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                             size_t src_offset, size_t bytes) {
  const size_t element = dtype_size(dst.dtype);
  TIDAL_CHECK(dst_offset % element == 0 && src_offset % element == 0 && bytes % element == 0,
              "dummy weights: a slice of '", src.name, "' not on element boundaries");
  const Tensor slice{.data = static_cast<char*>(dst.data) + dst_offset,
                     .dtype = dst.dtype,
                     .shape = {static_cast<int64_t>(bytes / element)},
                     .device = dst.device};
  backend_->fill_random(slice, dummy_fill(src, checkpoint_.synthetic_seed(),
                                          static_cast<int64_t>(src_offset / element)));
}

}  // namespace tidal
