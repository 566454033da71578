// ModelRunner: host-side batch layout, upload, forward, logits download.
#include "engine/model_runner.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "common/logging.h"

namespace tidal {
namespace {

// Keeps each input of a graph bucket 64-byte aligned, as the workspace's tensors are.
constexpr int64_t kGraphInputAlignment = 16;  // int32 elements

int64_t align_elements(int64_t count) {
  return (count + kGraphInputAlignment - 1) / kGraphInputAlignment * kGraphInputAlignment;
}

// The KV cache slot of a request's token at `position`.
int32_t kv_slot(const Request& request, int64_t position, int64_t block_size) {
  const int32_t block = request.block_ids[static_cast<size_t>(position / block_size)];
  return static_cast<int32_t>(block * block_size + position % block_size);
}

}  // namespace

ModelRunner::ModelRunner(Backend& backend, Qwen3MoeModel& model, KvCache& kv_cache,
                         DecodeGraphOptions graph_options)
    : backend_(&backend),
      model_(&model),
      kv_cache_(&kv_cache),
      workspace_(backend),
      graph_options_(graph_options) {}

ModelRunner::~ModelRunner() {
  try {
    release_graphs();
  } catch (const std::exception& error) {
    log_warning("releasing the decode graphs failed: ", error.what());
  }
  if (host_logits_pinned_) backend_->unpin_host(host_logits_.data());
}

void ModelRunner::reserve_host_logits(size_t count) {
  if (host_logits_.size() >= count) return;
  if (host_logits_pinned_) backend_->unpin_host(host_logits_.data());
  host_logits_ = std::vector<float>(count);
  // Page-locked when the backend can: an optimisation, so a refusal only costs speed.
  host_logits_pinned_ = backend_->pin_host(host_logits_.data(), count * sizeof(float));
}

std::span<const float> ModelRunner::download_logits(const Tensor& logits, int64_t rows) {
  const auto count = static_cast<size_t>(rows * logits.dim(1));
  reserve_host_logits(count);  // sized by the warm-up: a no-op in serving
  backend_->copy_to_host(host_logits_.data(), logits.data, count * sizeof(float));
  return {host_logits_.data(), count};
}

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
  if (const DecodeGraph* graph = graph_for(batch)) return replay(*graph, batch);
  return run_eager(batch, 0);
}

ModelRunner::GroupStep ModelRunner::propose(const std::vector<ScheduledRequest>& batch) const {
  GroupStep step;
  for (const ScheduledRequest& entry : batch) step.tokens += entry.num_new_tokens;
  step.replay = batch.empty() ? !graphs_.empty() : graph_for(batch) != nullptr;
  return step;
}

const ModelRunner::DecodeGraph& ModelRunner::bucket_for(int64_t num_seqs) const {
  for (const DecodeGraph& graph : graphs_) {
    if (graph.num_seqs >= num_seqs) return graph;
  }
  TIDAL_FAIL("the group agreed to replay a decode graph of ", num_seqs,
             " sequences, but this rank's largest holds ",
             graphs_.empty() ? 0 : graphs_.back().num_seqs);
}

StepLogits ModelRunner::run(const std::vector<ScheduledRequest>& batch, const GroupStep& step) {
  workspace_.begin_step();
  if (step.replay) return replay(bucket_for(step.tokens), batch);
  return run_eager(batch, step.tokens);
}

void ModelRunner::run_dummy(const GroupStep& step) {
  workspace_.begin_step();
  // The agreed token count is the same on every rank, so all take the same branch.
  if (step.tokens == 0) {
    forward(HostBatch{});  // nothing anywhere in the group: zero tokens, the same collectives
    return;
  }
  if (step.replay) {
    const DecodeGraph& graph = bucket_for(step.tokens);
    upload_graph_inputs(graph.num_seqs, {});
    backend_->replay(graph.id);
    return;
  }
  run_eager({}, step.tokens);
}

StepLogits ModelRunner::run_eager(const std::vector<ScheduledRequest>& batch,
                                  int64_t total_tokens) {
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
      host.slot_mapping.push_back(kv_slot(request, position, block_size));
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
  const auto own_tokens = static_cast<int64_t>(host.token_ids.size());
  TIDAL_CHECK(total_tokens == 0 || total_tokens >= own_tokens, "a group step of ", total_tokens,
              " tokens for a batch of ", own_tokens);
  if (total_tokens > own_tokens) {
    // One padding sequence: token -1 (a zero embedding), no cache slot, an empty context (its
    // attention rows are zero), nothing sampled.
    const int64_t padding = total_tokens - own_tokens;
    host.token_ids.insert(host.token_ids.end(), static_cast<size_t>(padding), -1);
    host.positions.insert(host.positions.end(), static_cast<size_t>(padding), 0);
    host.slot_mapping.insert(host.slot_mapping.end(), static_cast<size_t>(padding), -1);
    host.query_start.push_back(static_cast<int32_t>(total_tokens));
    host.context_lens.push_back(0);
    host.block_tables.resize(host.block_tables.size() + static_cast<size_t>(host.max_blocks), 0);
    host.max_query_len = std::max(host.max_query_len, padding);
  }
  if (host.token_ids.empty()) return result;
  if (result.requests.empty()) {
    // Every request is mid-prefill: still compute one row so the step's shapes stay regular.
    host.sample_rows.push_back(0);
  }
  const Tensor logits = forward(host);
  result.vocab_size = logits.dim(1);
  if (!result.requests.empty()) result.logits = download_logits(logits, logits.dim(0));
  return result;
}

void ModelRunner::warm_up(int64_t max_num_seqs, int64_t max_num_batched_tokens) {
  // The old graphs read the workspace and kernel scratch this warm-up may move.
  release_graphs();
  workspace_.unlock();
  workspace_.reset_high_water();
  workspace_.begin_step();
  HostBatch host;
  const int64_t num_seqs = std::min(max_num_seqs, max_num_batched_tokens);
  // In a group, a step may carry one padding sequence more (run_eager), which samples nothing.
  const int64_t with_padding = std::min(max_num_seqs + 1, max_num_batched_tokens);
  const int64_t block_size = kv_cache_->block_size();
  // The longest sequence decides the block table width.
  const int64_t longest = max_num_batched_tokens - (with_padding - 1);
  host.max_blocks = (longest + block_size - 1) / block_size;
  for (int64_t s = 0; s < with_padding; ++s) {
    const int64_t length = s == 0 ? longest : 1;
    for (int64_t i = 0; i < length; ++i) {
      host.token_ids.push_back(0);
      host.positions.push_back(static_cast<int32_t>(i));
      host.slot_mapping.push_back(-1);  // nothing is written to the cache
    }
    host.query_start.push_back(static_cast<int32_t>(host.token_ids.size()));
    host.context_lens.push_back(static_cast<int32_t>(length));
    host.block_tables.resize(host.block_tables.size() + static_cast<size_t>(host.max_blocks), 0);
    if (s < num_seqs) host.sample_rows.push_back(static_cast<int32_t>(host.token_ids.size()) - 1);
  }
  host.max_query_len = longest;
  host.max_context_len = longest;
  forward(host);
  backend_->synchronize();
  workspace_.consolidate();
  workspace_.lock();
  capture_decode_graphs(num_seqs);
  reserve_host_logits(static_cast<size_t>(num_seqs * model_->config().vocab_size));
  ++num_warm_ups_;
}

std::vector<int64_t> ModelRunner::decode_graph_buckets(int64_t max_num_seqs) {
  std::vector<int64_t> buckets;
  for (int64_t size : {1, 2, 4}) {
    if (size < max_num_seqs) buckets.push_back(size);
  }
  for (int64_t size = 8; size < max_num_seqs; size += 8) buckets.push_back(size);
  if (max_num_seqs > 0) buckets.push_back(max_num_seqs);
  return buckets;
}

ModelRunner::GraphLayout ModelRunner::graph_layout(int64_t num_seqs) const {
  GraphLayout layout;
  int64_t offset = 0;
  const auto place = [&](int64_t count) {
    const int64_t start = offset;
    offset += align_elements(count);
    return start;
  };
  layout.token_ids = place(num_seqs);
  layout.positions = place(num_seqs);
  layout.slot_mapping = place(num_seqs);
  layout.query_start = place(num_seqs + 1);
  layout.context_lens = place(num_seqs);
  layout.sample_rows = place(num_seqs);
  layout.block_tables = place(num_seqs * graph_blocks_);
  layout.total = offset;
  return layout;
}

ForwardBatch ModelRunner::graph_batch(int64_t num_seqs) const {
  const GraphLayout layout = graph_layout(num_seqs);
  auto* base = static_cast<int32_t*>(graph_inputs_.data());
  const auto view = [&](int64_t offset, std::initializer_list<int64_t> shape) {
    return Tensor{
        .data = base + offset, .dtype = DType::kI32, .shape = shape, .device = backend_->device()};
  };
  ForwardBatch batch;
  batch.token_ids = view(layout.token_ids, {num_seqs});
  batch.positions = view(layout.positions, {num_seqs});
  batch.slot_mapping = view(layout.slot_mapping, {num_seqs});
  batch.attention = {.query_start = view(layout.query_start, {num_seqs + 1}),
                     .context_lens = view(layout.context_lens, {num_seqs}),
                     .block_tables = view(layout.block_tables, {num_seqs, graph_blocks_}),
                     .num_seqs = num_seqs,
                     .max_query_len = 1,
                     .max_context_len = graph_blocks_ * kv_cache_->block_size()};
  batch.sample_rows = view(layout.sample_rows, {num_seqs});
  return batch;
}

void ModelRunner::upload_graph_inputs(int64_t num_seqs,
                                      const std::vector<ScheduledRequest>& batch) {
  const GraphLayout layout = graph_layout(num_seqs);
  std::vector<int32_t> host(static_cast<size_t>(layout.total), 0);
  const auto at = [&](int64_t region, int64_t index) -> int32_t& {
    return host[static_cast<size_t>(region + index)];
  };
  for (int64_t s = 0; s < num_seqs; ++s) {
    at(layout.token_ids, s) = -1;
    at(layout.slot_mapping, s) = -1;
    at(layout.query_start, s) = static_cast<int32_t>(s);
    at(layout.sample_rows, s) = static_cast<int32_t>(s);
  }
  at(layout.query_start, num_seqs) = static_cast<int32_t>(num_seqs);
  const int64_t block_size = kv_cache_->block_size();
  for (size_t s = 0; s < batch.size(); ++s) {
    const Request& request = *batch[s].request;
    const int64_t position = request.num_computed_tokens;
    const auto row = static_cast<int64_t>(s);
    at(layout.token_ids, row) = request.token_at(position);
    at(layout.positions, row) = static_cast<int32_t>(position);
    at(layout.slot_mapping, row) = kv_slot(request, position, block_size);
    at(layout.context_lens, row) = static_cast<int32_t>(position + 1);
    std::copy(request.block_ids.begin(), request.block_ids.end(),
              host.begin() + layout.block_tables + row * graph_blocks_);
  }
  backend_->copy_from_host(graph_inputs_.data(), host.data(), host.size() * sizeof(int32_t));
}

const ModelRunner::DecodeGraph* ModelRunner::graph_for(
    const std::vector<ScheduledRequest>& batch) const {
  if (graphs_.empty() || batch.empty()) return nullptr;
  for (const ScheduledRequest& entry : batch) {
    const Request& request = *entry.request;
    // One new token that completes the sequence (so it samples), in a table the graph covers.
    if (entry.num_new_tokens != 1 || request.num_computed_tokens + 1 != request.num_tokens() ||
        static_cast<int64_t>(request.block_ids.size()) > graph_blocks_) {
      return nullptr;
    }
  }
  const auto num_seqs = static_cast<int64_t>(batch.size());
  for (const DecodeGraph& graph : graphs_) {
    if (graph.num_seqs >= num_seqs) return &graph;
  }
  return nullptr;
}

StepLogits ModelRunner::replay(const DecodeGraph& graph,
                               const std::vector<ScheduledRequest>& batch) {
  upload_graph_inputs(graph.num_seqs, batch);
  backend_->replay(graph.id);
  ++num_graph_steps_;
  StepLogits result;
  result.vocab_size = graph.logits.dim(1);
  for (const ScheduledRequest& entry : batch) result.requests.push_back(entry.request);
  // Only the real sequences' rows: the padding rows come after them.
  result.logits = download_logits(graph.logits, static_cast<int64_t>(batch.size()));
  return result;
}

void ModelRunner::release_graphs() {
  for (const DecodeGraph& graph : graphs_) backend_->release_graph(graph.id);
  graphs_.clear();
}

void ModelRunner::capture_decode_graphs(int64_t max_num_seqs) {
  if (!backend_->supports_graphs() || !graph_options_.enabled || !model_->capturable() ||
      max_num_seqs <= 0)
    return;
  const auto start = std::chrono::steady_clock::now();
  const int64_t block_size = kv_cache_->block_size();
  const int64_t context =
      std::min(graph_options_.max_context, kv_cache_->num_blocks() * block_size);
  graph_blocks_ = std::max<int64_t>(1, (context + block_size - 1) / block_size);
  const std::vector<int64_t> buckets = decode_graph_buckets(max_num_seqs);
  const int64_t largest = buckets.back();
  const auto bytes = static_cast<size_t>(graph_layout(largest).total) * sizeof(int32_t);
  if (graph_inputs_.bytes() < bytes) graph_inputs_ = backend_->allocate(bytes);
  // One eager step of the largest bucket (all padding) first: the worst case above was a prefill,
  // and a decode kernel may need scratch of its own; no smaller bucket needs more. Capturing
  // records work without running it.
  upload_graph_inputs(largest, {});
  workspace_.begin_step();
  model_->forward(graph_batch(largest), kv_cache_->layers(), workspace_);
  // Captured into a local set that replaces graphs_ only when every bucket succeeded: a failure
  // leaves no graph held (in a group, a partial set could make ranks disagree on buckets).
  std::vector<DecodeGraph> captured;
  const auto release_captured = [&] {
    for (const DecodeGraph& graph : captured) {
      try {
        backend_->release_graph(graph.id);
      } catch (const std::exception& error) {
        log_warning("releasing a decode graph after a failed capture: ", error.what());
      }
    }
  };
  for (auto bucket = buckets.rbegin(); bucket != buckets.rend(); ++bucket) {
    workspace_.begin_step();
    backend_->begin_capture();
    Tensor logits;
    try {
      logits = model_->forward(graph_batch(*bucket), kv_cache_->layers(), workspace_);
    } catch (...) {
      // Ends the broken capture so the backend can run again (and drops what it made); the
      // original error is the news.
      try {
        backend_->release_graph(backend_->end_capture());
      } catch (...) {
      }
      release_captured();
      throw;
    }
    try {
      captured.push_back({.num_seqs = *bucket, .id = backend_->end_capture(), .logits = logits});
    } catch (...) {
      release_captured();
      throw;
    }
  }
  graphs_.assign(captured.rbegin(), captured.rend());
  backend_->synchronize();
  last_capture_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace tidal
