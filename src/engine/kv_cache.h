// The paged KV cache pools: per layer two tensors of [num_blocks, block_size, heads, dim] in the
// shapes the model's family asks for (ModelConfig::kv_cache: keys and values, or MLA's latents
// and rotary keys), allocated once on the device.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/model_config.h"

namespace tidal {

class KvCache {
 public:
  KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks, int64_t block_size);

  // Bytes one block takes over all layers, both pools.
  static size_t bytes_per_block(const ModelConfig& config, int64_t block_size, DType dtype);

  // Frees the pools and allocates `num_blocks` blocks afresh (zeroed). Their addresses change:
  // only before any decode graph is captured and while no request holds a block.
  void reallocate(int64_t num_blocks);

  const std::vector<KvCacheLayer>& layers() const { return layers_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }

 private:
  void allocate(int64_t num_blocks);

  Backend* backend_;
  int64_t num_layers_;
  KvCacheLayout layout_;
  int64_t num_blocks_ = 0;
  int64_t block_size_;
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvCacheLayer> layers_;
};

}  // namespace tidal
