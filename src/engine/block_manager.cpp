// BlockManager: a free list of KV cache blocks.
#include "engine/block_manager.h"

#include "common/error.h"

namespace tidal {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : num_blocks_(0), block_size_(block_size) {
  reset(num_blocks);
}

void BlockManager::reset(int64_t num_blocks) {
  TIDAL_CHECK(num_blocks > 0 && block_size_ > 0, "KV cache needs blocks, got ", num_blocks,
              " blocks of ", block_size_);
  TIDAL_CHECK(num_free_blocks() == num_blocks_, "resizing the KV cache while ",
              num_blocks_ - num_free_blocks(), " blocks are held");
  num_blocks_ = num_blocks;
  free_.clear();
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

bool BlockManager::ensure_capacity(Request& request, int64_t num_tokens) {
  const int64_t needed = blocks_needed(num_tokens) - static_cast<int64_t>(request.block_ids.size());
  if (needed <= 0) return true;
  if (needed > num_free_blocks()) return false;
  for (int64_t i = 0; i < needed; ++i) {
    request.block_ids.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockManager::release(Request& request) {
  for (auto it = request.block_ids.rbegin(); it != request.block_ids.rend(); ++it) {
    free_.push_back(*it);
  }
  request.block_ids.clear();
}

}  // namespace tidal
