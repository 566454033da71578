// KvCache: allocation of the per-layer pools (zeroed, so unwritten slots read as finite).
#include "engine/kv_cache.h"

namespace tidal {

size_t KvCache::bytes_per_block(const ModelConfig& config, int64_t block_size, DType dtype) {
  return static_cast<size_t>(config.num_layers * block_size *
                             config.kv_cache.elements_per_token()) *
         dtype_size(dtype);
}

KvCache::KvCache(Backend& backend, const ModelConfig& config, int64_t num_blocks,
                 int64_t block_size)
    : backend_(&backend),
      num_layers_(config.num_layers),
      layout_(config.kv_cache),
      block_size_(block_size) {
  allocate(num_blocks);
}

void KvCache::reallocate(int64_t num_blocks) {
  // Freed first: the new pools are usually the bigger ones, and both may not fit at once.
  layers_.clear();
  buffers_.clear();
  allocate(num_blocks);
}

void KvCache::allocate(int64_t num_blocks) {
  Backend& backend = *backend_;
  num_blocks_ = num_blocks;
  const DType dtype = backend.activation_dtype();
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    KvCacheLayer pools;
    pools.key = Tensor{.data = nullptr,
                       .dtype = dtype,
                       .shape = {num_blocks, block_size_, layout_.key_heads, layout_.key_dim},
                       .device = backend.device()};
    pools.value = Tensor{.data = nullptr,
                         .dtype = dtype,
                         .shape = {num_blocks, block_size_, layout_.value_heads, layout_.value_dim},
                         .device = backend.device()};
    for (Tensor* pool : {&pools.key, &pools.value}) {
      buffers_.push_back(backend.allocate(pool->num_bytes()));
      pool->data = buffers_.back().data();
      backend.fill_zero(*pool);
    }
    layers_.push_back(pools);
  }
}

}  // namespace tidal
