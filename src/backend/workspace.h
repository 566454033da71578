// The workspace: all per-step scratch comes from one buffer that a warm-up sizes by running the
// worst case and then locks. Asking a locked workspace for more is an error naming both sizes,
// never a silent reallocation (that would invalidate pointers captured in graphs).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

#include "backend/backend.h"

namespace tidal {

class Workspace {
 public:
  explicit Workspace(Backend& backend) : backend_(&backend) {}

  // Starts a step: every tensor taken in the previous step is released at once.
  void begin_step();
  // Scratch valid until the next begin_step(). Unlocked, it grows as needed; locked, a request
  // past the capacity throws tidal::Error.
  Tensor take(DType dtype, std::initializer_list<int64_t> shape);
  // Ends a warm-up step: keeps one buffer of exactly the high-water mark (smaller or larger than
  // before) so the next steps reuse it. Its address may change: only a warm-up calls this, and
  // graphs are captured after it.
  void consolidate();
  // Starts measuring the high-water mark afresh, so a warm-up for a smaller worst case (fewer
  // ranks after a scale-down) gives memory back instead of keeping the largest size ever seen.
  void reset_high_water() { high_water_ = 0; }
  void lock() { locked_ = true; }
  // Only a warm-up may grow the workspace again (after a topology change, for instance).
  void unlock() { locked_ = false; }

  bool locked() const { return locked_; }
  size_t capacity_bytes() const { return capacity_; }
  size_t high_water_bytes() const { return high_water_; }

 private:
  Backend* backend_;
  std::vector<DeviceBuffer> chunks_;  // one when consolidated; more only while growing
  size_t capacity_ = 0;               // bytes of chunks_.front() when consolidated
  size_t chunk_index_ = 0;
  size_t chunk_offset_ = 0;
  size_t used_ = 0;  // bytes handed out this step (with alignment)
  size_t high_water_ = 0;
  bool locked_ = false;
};

}  // namespace tidal
