// Tensor: a non-owning view (pointer, dtype, shape, device) that ops read and write through.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"

namespace tidal {

enum class DeviceKind : uint8_t { kCpu, kCuda };

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  DeviceKind device = DeviceKind::kCpu;

  int64_t dim(size_t index) const {
    TIDAL_CHECK(index < shape.size(), "tensor has ", shape.size(), " dims, asked for dim ", index);
    return shape[index];
  }
  int64_t num_elements() const {
    int64_t count = 1;
    for (const int64_t extent : shape) count *= extent;
    return count;
  }
  size_t num_bytes() const { return static_cast<size_t>(num_elements()) * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // The rows [begin, begin + count) of a tensor viewed as [rows, ...].
  Tensor rows(int64_t begin, int64_t count) const {
    TIDAL_CHECK(!shape.empty() && begin >= 0 && begin + count <= shape[0], "row range [", begin,
                ", ", begin + count, ") outside ", shape.empty() ? 0 : shape[0], " rows");
    Tensor view = *this;
    view.shape[0] = count;
    view.data = static_cast<char*>(data) +
                static_cast<size_t>(begin) * (num_bytes() / static_cast<size_t>(shape[0]));
    return view;
  }
  // Same memory, another shape of the same number of elements.
  Tensor reshaped(std::initializer_list<int64_t> new_shape) const {
    Tensor view = *this;
    view.shape.assign(new_shape);
    TIDAL_CHECK(view.num_elements() == num_elements(), "reshape changes the element count");
    return view;
  }
};

}  // namespace tidal
