// Workspace: bump allocation over one locked buffer, growing only while unlocked.
#include "backend/workspace.h"

#include <algorithm>

namespace tidal {
namespace {
constexpr size_t kAlignment = 256;
size_t align_up(size_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}
}  // namespace

void Workspace::begin_step() {
  chunk_index_ = 0;
  chunk_offset_ = 0;
  used_ = 0;
}

Tensor Workspace::take(DType dtype, std::initializer_list<int64_t> shape) {
  Tensor tensor{.data = nullptr, .dtype = dtype, .shape = shape, .device = backend_->device()};
  const size_t bytes = align_up(tensor.num_bytes());
  if (locked_ && used_ + bytes > capacity_) {
    TIDAL_FAIL("workspace is locked at ", capacity_, " bytes but this step needs at least ",
               used_ + bytes, " bytes: the batch is larger than the warm-up's worst case");
  }
  while (chunk_index_ < chunks_.size() && chunk_offset_ + bytes > chunks_[chunk_index_].bytes()) {
    ++chunk_index_;
    chunk_offset_ = 0;
  }
  if (chunk_index_ == chunks_.size()) {
    // Growing (unlocked only): a new chunk, so tensors already handed out stay valid.
    chunks_.push_back(backend_->allocate(std::max(bytes, capacity_)));
    chunk_offset_ = 0;
  }
  tensor.data = static_cast<char*>(chunks_[chunk_index_].data()) + chunk_offset_;
  chunk_offset_ += bytes;
  used_ += bytes;
  high_water_ = std::max(high_water_, used_);
  return tensor;
}

void Workspace::consolidate() {
  TIDAL_CHECK(!locked_, "consolidate() on a locked workspace");
  if (chunks_.size() == 1 && capacity_ == high_water_) return;
  chunks_.clear();
  capacity_ = high_water_;
  if (capacity_ > 0) chunks_.push_back(backend_->allocate(capacity_));
  begin_step();
}

}  // namespace tidal
