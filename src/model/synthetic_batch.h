// SyntheticBatch: a forward step of made-up sequences (random tokens, contiguous KV blocks) for
// benchmarks and tests that run the model without a scheduler.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/forward_batch.h"

namespace tidal {

struct SyntheticBatchSpec {
  int64_t num_seqs = 1;
  int64_t new_tokens = 1;     // tokens each sequence runs this step
  int64_t cached_tokens = 0;  // tokens each sequence already has in the KV cache
  int64_t block_size = 16;
  int64_t first_block = 0;  // sequence s owns blocks first_block + s * blocks_per_seq() + j
  int64_t vocab_size = 1;
  uint64_t seed = 0;

  int64_t blocks_per_seq() const {
    return (cached_tokens + new_tokens + block_size - 1) / block_size;
  }
  int64_t num_blocks() const { return first_block + num_seqs * blocks_per_seq(); }
};

// Owns the batch's device tensors; every sequence samples its last new token.
class SyntheticBatch {
 public:
  SyntheticBatch(Backend& backend, const SyntheticBatchSpec& spec);

  const ForwardBatch& batch() const { return batch_; }
  const SyntheticBatchSpec& spec() const { return spec_; }

 private:
  Tensor upload(Backend& backend, const std::vector<int32_t>& values,
                std::initializer_list<int64_t> shape);

  SyntheticBatchSpec spec_;
  std::vector<DeviceBuffer> buffers_;
  ForwardBatch batch_;
};

}  // namespace tidal
