// Tensor: a non-owning view (pointer, dtype, shape, device) that ops read and write through.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"

namespace tidal {

enum class DeviceKind : uint8_t { kCpu, kCuda };

// The scales of a block-quantized weight (DType::kF8E4M3, as FP8 checkpoints store them): each
// matrix [rows, cols] of the weight (its last two dims) is split into blocks of
// [block_rows, block_cols], partial at the edges, and element (r, c) means
// fp8(r, c) * data[row_block(r) * col_blocks(cols) + c / block_cols], matrices one after another.
// Two projections stacked on the rows (gate then up) keep each one's blocks: rows from `split` on
// start a fresh block row.
struct BlockScales {
  float* data = nullptr;  // F32, on the weight's device
  int64_t block_rows = 0;
  int64_t block_cols = 0;
  int64_t split = 0;  // 0: a single projection

  static int64_t blocks(int64_t extent, int64_t block) { return (extent + block - 1) / block; }
  int64_t row_block(int64_t row) const {
    return split == 0 || row < split ? row / block_rows
                                     : blocks(split, block_rows) + (row - split) / block_rows;
  }
  int64_t row_blocks(int64_t rows) const {
    return split == 0 ? blocks(rows, block_rows)
                      : blocks(split, block_rows) + blocks(rows - split, block_rows);
  }
  int64_t col_blocks(int64_t cols) const { return blocks(cols, block_cols); }
  int64_t per_matrix(int64_t rows, int64_t cols) const {
    return row_blocks(rows) * col_blocks(cols);
  }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  DeviceKind device = DeviceKind::kCpu;
  BlockScales scales = {};  // set exactly when dtype is kF8E4M3

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
    if (scales.data != nullptr) {
      // Whole matrices of a stack ([n, rows, cols]) only: their scales move with them.
      TIDAL_CHECK(shape.size() == 3, "rows of a block-quantized tensor of ", shape.size(),
                  " dims (only whole matrices of a stack)");
      view.scales.data = scales.data + begin * scales.per_matrix(shape[1], shape[2]);
    }
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
