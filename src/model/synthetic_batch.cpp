// SyntheticBatch: host-side layout of made-up sequences, uploaded once.
#include "model/synthetic_batch.h"

#include "common/counter_random.h"
#include "common/error.h"

namespace tidal {

SyntheticBatch::SyntheticBatch(Backend& backend, const SyntheticBatchSpec& spec) : spec_(spec) {
  TIDAL_CHECK(spec.num_seqs > 0 && spec.new_tokens > 0 && spec.cached_tokens >= 0 &&
                  spec.block_size > 0 && spec.vocab_size > 0,
              "synthetic batch: sequences, new tokens, block size and vocabulary must be positive");
  const int64_t blocks = spec.blocks_per_seq();
  std::vector<int32_t> token_ids, positions, slot_mapping, query_start{0}, context_lens,
      block_tables, sample_rows;
  for (int64_t s = 0; s < spec.num_seqs; ++s) {
    const int64_t first = spec.first_block + s * blocks;
    for (int64_t b = 0; b < blocks; ++b) block_tables.push_back(static_cast<int32_t>(first + b));
    for (int64_t p = spec.cached_tokens; p < spec.cached_tokens + spec.new_tokens; ++p) {
      const auto draw = static_cast<uint64_t>(token_ids.size());
      const auto ticks = static_cast<int64_t>(counter_random::ticks(spec.seed, draw));
      token_ids.push_back(static_cast<int32_t>((ticks + (int64_t{1} << 23)) % spec.vocab_size));
      positions.push_back(static_cast<int32_t>(p));
      slot_mapping.push_back(static_cast<int32_t>((first + p / spec.block_size) * spec.block_size +
                                                  p % spec.block_size));
    }
    query_start.push_back(static_cast<int32_t>(token_ids.size()));
    context_lens.push_back(static_cast<int32_t>(spec.cached_tokens + spec.new_tokens));
    sample_rows.push_back(static_cast<int32_t>(token_ids.size()) - 1);
  }
  const auto num_tokens = static_cast<int64_t>(token_ids.size());
  batch_.token_ids = upload(backend, token_ids, {num_tokens});
  batch_.positions = upload(backend, positions, {num_tokens});
  batch_.slot_mapping = upload(backend, slot_mapping, {num_tokens});
  batch_.attention = {.query_start = upload(backend, query_start, {spec.num_seqs + 1}),
                      .context_lens = upload(backend, context_lens, {spec.num_seqs}),
                      .block_tables = upload(backend, block_tables, {spec.num_seqs, blocks}),
                      .num_seqs = spec.num_seqs,
                      .max_query_len = spec.new_tokens,
                      .max_context_len = spec.cached_tokens + spec.new_tokens};
  batch_.sample_rows = upload(backend, sample_rows, {spec.num_seqs});
}

Tensor SyntheticBatch::upload(Backend& backend, const std::vector<int32_t>& values,
                              std::initializer_list<int64_t> shape) {
  buffers_.push_back(backend.allocate(values.size() * sizeof(int32_t)));
  Tensor tensor{.data = buffers_.back().data(),
                .dtype = DType::kI32,
                .shape = shape,
                .device = backend.device()};
  backend.copy_from_host(tensor.data, values.data(), values.size() * sizeof(int32_t));
  return tensor;
}

}  // namespace tidal
