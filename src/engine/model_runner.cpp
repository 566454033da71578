// ModelRunner: host-side batch layout, upload, forward, logits download.
#include "engine/model_runner.h"

#include <algorithm>

namespace tidal {

ModelRunner::ModelRunner(Backend& backend, Qwen3MoeModel& model, KvCache& kv_cache)
    : backend_(&backend), model_(&model), kv_cache_(&kv_cache), workspace_(backend) {}

Tensor ModelRunner::upload(const std::vector<int32_t>& values,
                           std::initializer_list<int64_t> shape) {
  const Tensor tensor = workspace_.take(DType::kI32, shape);
  backend_->copy_from_host(tensor.data, values.data(), values.size() * sizeof(int32_t));
  return tensor;
}

Tensor ModelRunner::forward(const HostBatch& host) {
  const auto num_tokens = static_cast<int64_t>(host.token_ids.size());
  const auto num_seqs = static_cast<int64_t>(host.context_lens.size());
  ForwardBatch batch;
  batch.token_ids = upload(host.token_ids, {num_tokens});
  batch.positions = upload(host.positions, {num_tokens});
  batch.slot_mapping = upload(host.slot_mapping, {num_tokens});
  batch.attention = {.query_start = upload(host.query_start, {num_seqs + 1}),
                     .context_lens = upload(host.context_lens, {num_seqs}),
                     .block_tables = upload(host.block_tables, {num_seqs, host.max_blocks}),
                     .num_seqs = num_seqs,
                     .max_query_len = host.max_query_len,
                     .max_context_len = host.max_context_len};
  batch.sample_rows = upload(host.sample_rows, {static_cast<int64_t>(host.sample_rows.size())});
  return model_->forward(batch, kv_cache_->layers(), workspace_);
}

StepLogits ModelRunner::run(const std::vector<ScheduledRequest>& batch) {
  workspace_.begin_step();
  HostBatch host;
  StepLogits result;
  const int64_t block_size = kv_cache_->block_size();
  for (const ScheduledRequest& entry : batch) {
    host.max_blocks =
        std::max<int64_t>(host.max_blocks, static_cast<int64_t>(entry.request->block_ids.size()));
  }
  for (const ScheduledRequest& entry : batch) {
    const Request& request = *entry.request;
    const int64_t start = request.num_computed_tokens;
    const int64_t end = start + entry.num_new_tokens;
    for (int64_t position = start; position < end; ++position) {
      host.token_ids.push_back(request.token_at(position));
      host.positions.push_back(static_cast<int32_t>(position));
      const int32_t block = request.block_ids[static_cast<size_t>(position / block_size)];
      host.slot_mapping.push_back(static_cast<int32_t>(block * block_size + position % block_size));
    }
    host.query_start.push_back(static_cast<int32_t>(host.token_ids.size()));
    host.context_lens.push_back(static_cast<int32_t>(end));
    std::vector<int32_t> table = request.block_ids;
    table.resize(static_cast<size_t>(host.max_blocks), 0);
    host.block_tables.insert(host.block_tables.end(), table.begin(), table.end());
    host.max_query_len = std::max(host.max_query_len, entry.num_new_tokens);
    host.max_context_len = std::max(host.max_context_len, end);
    // A request samples once every known token is in the cache (the last prefill chunk or a
    // decode).
    if (end == request.num_tokens()) {
      host.sample_rows.push_back(static_cast<int32_t>(host.token_ids.size()) - 1);
      result.requests.push_back(entry.request);
    }
  }
  if (host.token_ids.empty()) return result;
  if (result.requests.empty()) {
    // Every request is mid-prefill: still compute one row so the step's shapes stay regular.
    host.sample_rows.push_back(0);
  }
  const Tensor logits = forward(host);
  result.vocab_size = logits.dim(1);
  if (!result.requests.empty()) {
    result.logits.resize(static_cast<size_t>(logits.num_elements()));
    backend_->copy_to_host(result.logits.data(), logits.data, logits.num_bytes());
  }
  return result;
}

void ModelRunner::run_dummy() {
  workspace_.begin_step();
  forward(HostBatch{});
}

void ModelRunner::warm_up(int64_t max_num_seqs, int64_t max_num_batched_tokens) {
  workspace_.unlock();
  workspace_.reset_high_water();
  workspace_.begin_step();
  HostBatch host;
  const int64_t num_seqs = std::min(max_num_seqs, max_num_batched_tokens);
  const int64_t block_size = kv_cache_->block_size();
  // The longest sequence decides the block table width.
  const int64_t longest = max_num_batched_tokens - (num_seqs - 1);
  host.max_blocks = (longest + block_size - 1) / block_size;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t length = s == 0 ? longest : 1;
    for (int64_t i = 0; i < length; ++i) {
      host.token_ids.push_back(0);
      host.positions.push_back(static_cast<int32_t>(i));
      host.slot_mapping.push_back(-1);  // nothing is written to the cache
    }
    host.query_start.push_back(static_cast<int32_t>(host.token_ids.size()));
    host.context_lens.push_back(static_cast<int32_t>(length));
    host.block_tables.resize(host.block_tables.size() + static_cast<size_t>(host.max_blocks), 0);
    host.sample_rows.push_back(static_cast<int32_t>(host.token_ids.size()) - 1);
  }
  host.max_query_len = longest;
  host.max_context_len = longest;
  forward(host);
  backend_->synchronize();
  workspace_.consolidate();
  workspace_.lock();
  ++num_warm_ups_;
}

}  // namespace tidal
