// BlockManager: hands out fixed-size KV cache blocks to requests and takes them back.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/request.h"

namespace tidal {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  // Starts over with `num_blocks` free blocks (the KV cache was sized anew); no request may hold
  // a block.
  void reset(int64_t num_blocks);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_needed(int64_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }

  // Gives `request` enough blocks for `num_tokens` tokens; false (and nothing taken) when the
  // free blocks do not suffice.
  bool ensure_capacity(Request& request, int64_t num_tokens);
  void release(Request& request);

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace tidal
