// ModelRunner: host-side batch layout, upload, forward, sampling on the device, token download.
#include "engine/model_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>

#include "common/logging.h"

namespace tidal {
namespace {

// Keeps each input of a graph bucket 64-byte aligned, as the workspace's tensors are.
constexpr int64_t kGraphInputAlignment = 16;  // int32 elements

// Banned ids a decode graph holds per sequence (EOS ids and stop ids of requests short of
// min_tokens); a step that needs more runs eagerly.
constexpr int64_t kGraphBannedPerRow = 8;

int64_t align_elements(int64_t count) {
  return (count + kGraphInputAlignment - 1) / kGraphInputAlignment * kGraphInputAlignment;
}

// Where an eager step's sampling buffer keeps its rows, banned ids and drawn tokens, in int32
// elements; `end` is the buffer's size.
struct EagerSamplingLayout {
  int64_t banned = 0, samples = 0, end = 0;
};
EagerSamplingLayout eager_sampling_layout(int64_t rows, int64_t banned) {
  EagerSamplingLayout layout;
  layout.banned = align_elements(rows * kSamplingRowWords);
  layout.samples = layout.banned + align_elements(banned);
  layout.end = layout.samples + rows * kSampledTokenWords;
  return layout;
}

// Whether a request's next draw bans the EOS ids and its stop ids: its output is still short of
// min_tokens.
bool bans_stop_ids(const Request& request) {
  return static_cast<int64_t>(request.output_ids.size()) < request.params.min_tokens;
}

// Fills `row`'s adjusted-draw fields and appends what they index to `ids` (SamplingRow's
// ranges): bad words' banned ids, the allowed ids, and one LogitAdjustment per id whose logit
// changes (a biased id, an id of the context under a repetition penalty, an id of the output
// under a frequency or presence penalty).
void add_adjusted_sampling(const Request& request, SamplingRow& row, std::vector<int32_t>& ids) {
  const SamplingParams& params = request.params;
  row.presence_penalty = params.presence_penalty;
  row.frequency_penalty = params.frequency_penalty;
  row.repetition_penalty = params.repetition_penalty;
  row.min_p = params.min_p;
  // A bad word whose other ids end the output may not be completed: append after the row's own
  // banned ids, which ids ends with.
  const std::vector<int32_t>& output = request.output_ids;
  for (const std::vector<int32_t>& word : params.bad_words_ids) {
    const size_t prefix = word.size() - 1;
    if (prefix <= output.size() &&
        std::equal(word.begin(), word.end() - 1, output.end() - static_cast<ptrdiff_t>(prefix))) {
      if (row.banned_count == 0) row.banned_begin = static_cast<int32_t>(ids.size());
      ids.push_back(word.back());
      ++row.banned_count;
    }
  }
  if (!params.allowed_token_ids.empty()) {
    row.allowed_begin = static_cast<int32_t>(ids.size());
    row.allowed_count = static_cast<int32_t>(params.allowed_token_ids.size());
    ids.insert(ids.end(), params.allowed_token_ids.begin(), params.allowed_token_ids.end());
  } else if (request.grammar) {
    // Structured output: what the grammar allows next (never nothing: a stop id at its end).
    row.allowed_begin = static_cast<int32_t>(ids.size());
    request.grammar->allowed_ids(ids);
    row.allowed_count = static_cast<int32_t>(ids.size()) - row.allowed_begin;
    TIDAL_CHECK(row.allowed_count > 0, "request '", request.id, "': its grammar allows no token");
  }
  if (!params.adjusts_logits()) return;
  std::map<int32_t, LogitAdjustment> entries;  // by id: the adjustments come out in id order
  for (const auto& [id, bias] : params.logit_bias) entries[id] = {.id = id, .bias = bias};
  if (params.repetition_penalty != 1.0f) {
    for (const int32_t id : request.prompt_ids) {
      entries.try_emplace(id, LogitAdjustment{.id = id}).first->second.in_context = 1;
    }
  }
  for (const int32_t id : output) {
    LogitAdjustment& entry = entries.try_emplace(id, LogitAdjustment{.id = id}).first->second;
    entry.in_context = 1;
    ++entry.output_count;
  }
  row.adjust_begin = static_cast<int32_t>(ids.size());
  row.adjust_count = static_cast<int32_t>(entries.size());
  for (const auto& [id, entry] : entries) {
    int32_t words[kLogitAdjustmentWords];
    std::memcpy(words, &entry, sizeof(entry));
    ids.insert(ids.end(), words, words + kLogitAdjustmentWords);
  }
}

// The KV cache slot of a request's token at `position`.
int32_t kv_slot(const Request& request, int64_t position, int64_t block_size) {
  const int32_t block = request.block_ids[static_cast<size_t>(position / block_size)];
  return static_cast<int32_t>(block * block_size + position % block_size);
}

}  // namespace

ModelRunner::ModelRunner(Backend& backend, CausalLm& model, KvCache& kv_cache,
                         DecodeGraphOptions graph_options)
    : backend_(&backend),
      model_(&model),
      kv_cache_(&kv_cache),
      workspace_(backend),
      graph_options_(graph_options) {}

TokenLogprob token_logprob(const SampledToken& sampled) {
  TokenLogprob entry{.token_id = sampled.token, .logprob = sampled.logprob, .top = {}};
  for (int32_t i = 0; i < sampled.num_top; ++i)
    entry.top.emplace_back(sampled.top_ids[i], sampled.top_logprobs[i]);
  return entry;
}

ModelRunner::~ModelRunner() {
  try {
    release_graphs();
  } catch (const std::exception& error) {
    log_warning("releasing the decode graphs failed: ", error.what());
  }
  if (host_samples_pinned_) backend_->unpin_host(host_samples_.data());
}

void ModelRunner::reserve_host_samples(size_t count) {
  if (host_samples_.size() >= count) return;
  if (host_samples_pinned_) backend_->unpin_host(host_samples_.data());
  host_samples_ = std::vector<SampledToken>(count);
  // Page-locked when the backend can: an optimisation, so a refusal only costs speed.
  host_samples_pinned_ = backend_->pin_host(host_samples_.data(), count * sizeof(SampledToken));
}

std::span<const SampledToken> ModelRunner::download_samples(const Tensor& samples, int64_t rows) {
  const auto count = static_cast<size_t>(rows);
  reserve_host_samples(count);  // sized by the warm-up: a no-op in serving
  backend_->copy_to_host(host_samples_.data(), samples.data, count * sizeof(SampledToken));
  return {host_samples_.data(), count};
}

ModelRunner::HostSampling ModelRunner::sampling_rows(const std::vector<Request*>& requests) const {
  HostSampling host;
  host.rows.resize(requests.size() * static_cast<size_t>(kSamplingRowWords));
  const std::vector<int32_t>& eos = model_->config().eos_token_ids;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& request = *requests[i];
    const SamplingParams& params = request.params;
    SamplingRow row{.seed = request.seed,
                    .counter = request.output_ids.size(),
                    .temperature = params.greedy() ? 0.0f : params.temperature,
                    .top_p = params.top_p,
                    .top_k = params.top_k,
                    .num_top_logprobs = params.logprobs ? *params.logprobs : -1,
                    .banned_begin = static_cast<int32_t>(host.banned.size()),
                    .banned_count = 0};
    // EOS (and the request's stop ids) may not end the output before min_tokens.
    if (bans_stop_ids(request)) {
      host.banned.insert(host.banned.end(), eos.begin(), eos.end());
      host.banned.insert(host.banned.end(), params.stop_token_ids.begin(),
                         params.stop_token_ids.end());
      row.banned_count = static_cast<int32_t>(host.banned.size()) - row.banned_begin;
    }
    if (params.needs_adjusted_sampling()) add_adjusted_sampling(request, row, host.banned);
    std::memcpy(host.rows.data() + i * static_cast<size_t>(kSamplingRowWords), &row, sizeof(row));
  }
  return host;
}

StepSamples ModelRunner::sample_eager(std::vector<Request*> requests, const Tensor& logits,
                                      const std::vector<ScoringRow>& scoring) {
  const auto num_samples = static_cast<int64_t>(requests.size());
  const auto rows = num_samples + static_cast<int64_t>(scoring.size());
  HostSampling host = sampling_rows(requests);
  // A scoring row "draws" the prompt's next token, the only one it allows, greedily: its
  // SampledToken is that token's raw logprob and the top alternatives.
  for (const ScoringRow& score : scoring) {
    const Request& request = *score.request;
    const SamplingRow row{.num_top_logprobs = *request.params.prompt_logprobs,
                          .allowed_begin = static_cast<int32_t>(host.banned.size()),
                          .allowed_count = 1};
    host.banned.push_back(request.prompt_ids[static_cast<size_t>(score.position + 1)]);
    const auto* words = reinterpret_cast<const int32_t*>(&row);
    host.rows.insert(host.rows.end(), words, words + kSamplingRowWords);
  }
  // One buffer, one upload: the rows, the banned ids, then room for the drawn tokens.
  const auto banned = static_cast<int64_t>(host.banned.size());
  const EagerSamplingLayout layout = eager_sampling_layout(rows, banned);
  const auto bytes = static_cast<size_t>(layout.end) * sizeof(int32_t);
  // Sized by the warm-up for max_num_seqs rows of every banned id a request may have. Adjusted
  // draws (CPU only, where nothing records addresses) may need more: the buffer grows.
  if (eager_sampling_.bytes() < bytes && !backend_->supports_graphs())
    eager_sampling_ = backend_->allocate(bytes);
  TIDAL_CHECK(eager_sampling_.bytes() >= bytes, "sampling ", rows, " rows with ", banned,
              " banned ids needs ", bytes, " bytes; the warm-up sized ", eager_sampling_.bytes());
  std::vector<int32_t> staged(static_cast<size_t>(layout.samples), 0);
  std::copy(host.rows.begin(), host.rows.end(), staged.begin());
  std::copy(host.banned.begin(), host.banned.end(), staged.begin() + layout.banned);
  backend_->copy_from_host(eager_sampling_.data(), staged.data(), staged.size() * sizeof(int32_t));
  const Tensor out = int32_view(eager_sampling_, layout.samples, {rows, kSampledTokenWords});
  backend_->sample(logits.rows(0, rows), int32_view(eager_sampling_, 0, {rows, kSamplingRowWords}),
                   banned > 0 ? int32_view(eager_sampling_, layout.banned, {banned}) : Tensor{},
                   out);
  const std::span<const SampledToken> tokens = download_samples(out, rows);
  for (size_t i = 0; i < scoring.size(); ++i) {
    Request& request = *scoring[i].request;
    request.prompt_logprobs.resize(
        std::max(request.prompt_logprobs.size(), request.prompt_ids.size() - 1));
    request.prompt_logprobs[static_cast<size_t>(scoring[i].position)] =
        token_logprob(tokens[static_cast<size_t>(num_samples) + i]);
  }
  return {.requests = std::move(requests),
          .tokens = tokens.first(static_cast<size_t>(num_samples))};
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

StepSamples ModelRunner::run(const std::vector<ScheduledRequest>& batch) {
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

StepSamples ModelRunner::run(const std::vector<ScheduledRequest>& batch, const GroupStep& step) {
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

StepSamples ModelRunner::run_eager(const std::vector<ScheduledRequest>& batch,
                                   int64_t total_tokens) {
  HostBatch host;
  std::vector<Request*> sampling;
  std::vector<ScoringRow> scoring;
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
      sampling.push_back(entry.request);
    }
    // Prompt logprobs: the logits at each prompt position of this chunk score the next prompt
    // token (rows after the sampling ones).
    const auto prompt_len = static_cast<int64_t>(request.prompt_ids.size());
    if (request.params.prompt_logprobs && !request.prompt_logprobs_sent) {
      const auto chunk_start = static_cast<int64_t>(host.token_ids.size()) - (end - start);
      for (int64_t position = start; position < std::min(end, prompt_len - 1); ++position) {
        scoring.push_back({.request = entry.request,
                           .position = position,
                           .row = static_cast<int32_t>(chunk_start + (position - start))});
      }
    }
  }
  for (const ScoringRow& row : scoring) host.sample_rows.push_back(row.row);
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
  if (host.token_ids.empty()) return {};
  if (host.sample_rows.empty()) {
    // Every request is mid-prefill: still compute one row so the step's shapes stay regular.
    host.sample_rows.push_back(0);
  }
  const Tensor logits = forward(host);
  if (sampling.empty() && scoring.empty()) return {};
  return sample_eager(std::move(sampling), logits, scoring);
}

void ModelRunner::warm_up(int64_t max_num_seqs, int64_t max_num_batched_tokens,
                          int64_t max_context_len) {
  warm_up_workspace(max_num_seqs, max_num_batched_tokens, max_context_len);
  capture_decode_graphs(std::min(max_num_seqs, max_num_batched_tokens));
}

bool ModelRunner::captures_graphs() const {
  return backend_->supports_graphs() && graph_options_.enabled && model_->capturable();
}

void ModelRunner::warm_up_workspace(int64_t max_num_seqs, int64_t max_num_batched_tokens,
                                    int64_t max_context_len) {
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
  // The block table is as wide as the longest context in the step: a decode step of many
  // sequences near max_model_len is wider than any step whose tokens are all new.
  const int64_t longest = max_num_batched_tokens - (with_padding - 1);
  host.max_blocks = (std::max(longest, max_context_len) + block_size - 1) / block_size;
  for (int64_t s = 0; s < with_padding; ++s) {
    const int64_t length = s == 0 ? longest : 1;
    for (int64_t i = 0; i < length; ++i) {
      host.token_ids.push_back(0);
      host.positions.push_back(static_cast<int32_t>(i));
      host.slot_mapping.push_back(-1);  // nothing is written to the cache
    }
    host.query_start.push_back(static_cast<int32_t>(host.token_ids.size()));
    host.context_lens.push_back(static_cast<int32_t>(length));
    // Every table entry is block 0, so a cache of one block is enough (the engine sizes the
    // real one after this, from what the worst case left).
    host.block_tables.resize(host.block_tables.size() + static_cast<size_t>(host.max_blocks), 0);
    if (backend_->draws_adjusted()) {
      // Prompt logprobs may ask for a row per token of a step: size the logits for all of them.
      if (s < num_seqs) {
        for (int64_t i = length; i > 0; --i)
          host.sample_rows.push_back(static_cast<int32_t>(host.token_ids.size() - i));
      }
    } else if (s < num_seqs) {
      host.sample_rows.push_back(static_cast<int32_t>(host.token_ids.size()) - 1);
    }
  }
  host.max_query_len = longest;
  host.max_context_len = longest;
  const Tensor logits = forward(host);
  // The sampler on the worst case's rows: its buffer gets its serving size (every row with the
  // most banned ids a request may have: the EOS ids and kMaxStopTokenIds stop ids) and its
  // kernels load now, not in the first served step.
  const auto most_banned =
      static_cast<int64_t>(model_->config().eos_token_ids.size() + kMaxStopTokenIds);
  const auto sampling_bytes =
      static_cast<size_t>(eager_sampling_layout(num_seqs, num_seqs * most_banned).end) *
      sizeof(int32_t);
  if (eager_sampling_.bytes() < sampling_bytes)
    eager_sampling_ = backend_->allocate(sampling_bytes);
  std::vector<Request> rows(static_cast<size_t>(num_seqs));
  std::vector<Request*> sampling;
  for (Request& row : rows) sampling.push_back(&row);
  if (!sampling.empty()) sample_eager(std::move(sampling), logits);
  if (captures_graphs() && num_seqs > 0) {
    // The largest bucket's decode step with the widest block table a graph may get, so that the
    // graphs' inputs and the decode kernels' scratch are allocated now, before the engine sizes
    // the KV cache from what is left (the capture then finds them big enough).
    graph_blocks_ =
        std::max<int64_t>(1, (graph_options_.max_context + block_size - 1) / block_size);
    const int64_t largest = decode_graph_buckets(num_seqs).back();
    const auto bytes = static_cast<size_t>(graph_layout(largest).total) * sizeof(int32_t);
    if (graph_inputs_.bytes() < bytes) graph_inputs_ = backend_->allocate(bytes);
    upload_graph_inputs(largest, {});
    workspace_.begin_step();
    decode_graph_step(largest);
  }
  backend_->synchronize();
  workspace_.consolidate();
  workspace_.lock();
  ++num_warm_ups_;
}

Tensor ModelRunner::decode_graph_step(int64_t num_seqs) {
  const GraphLayout layout = graph_layout(num_seqs);
  const Tensor logits = model_->forward(graph_batch(num_seqs), kv_cache_->layers(), workspace_);
  const Tensor samples = int32_view(graph_inputs_, layout.samples, {num_seqs, kSampledTokenWords});
  backend_->sample(
      logits, int32_view(graph_inputs_, layout.sampling, {num_seqs, kSamplingRowWords}),
      int32_view(graph_inputs_, layout.banned, {num_seqs * kGraphBannedPerRow}), samples);
  return samples;
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
  layout.sampling = place(num_seqs * kSamplingRowWords);
  layout.banned = place(num_seqs * kGraphBannedPerRow);
  layout.block_tables = place(num_seqs * graph_blocks_);
  layout.uploaded = offset;
  layout.samples = place(num_seqs * kSampledTokenWords);
  layout.total = offset;
  return layout;
}

Tensor ModelRunner::int32_view(const DeviceBuffer& buffer, int64_t offset,
                               std::initializer_list<int64_t> shape) const {
  return Tensor{.data = static_cast<int32_t*>(buffer.data()) + offset,
                .dtype = DType::kI32,
                .shape = shape,
                .device = backend_->device()};
}

ForwardBatch ModelRunner::graph_batch(int64_t num_seqs) const {
  const GraphLayout layout = graph_layout(num_seqs);
  const auto view = [&](int64_t offset, std::initializer_list<int64_t> shape) {
    return int32_view(graph_inputs_, offset, shape);
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
  // Everything before the drawn tokens' region, in one copy.
  std::vector<int32_t> host(static_cast<size_t>(layout.uploaded), 0);
  const auto at = [&](int64_t region, int64_t index) -> int32_t& {
    return host[static_cast<size_t>(region + index)];
  };
  for (int64_t s = 0; s < num_seqs; ++s) {
    at(layout.token_ids, s) = -1;
    at(layout.slot_mapping, s) = -1;
    at(layout.query_start, s) = static_cast<int32_t>(s);
    at(layout.sample_rows, s) = static_cast<int32_t>(s);
    // Padding rows draw greedily from zero logits; nobody reads their tokens.
    const SamplingRow greedy{};
    std::memcpy(&at(layout.sampling, s * kSamplingRowWords), &greedy, sizeof(greedy));
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
  std::vector<Request*> requests;
  for (const ScheduledRequest& entry : batch) requests.push_back(entry.request);
  const HostSampling sampling = sampling_rows(requests);
  TIDAL_CHECK(static_cast<int64_t>(sampling.banned.size()) <= num_seqs * kGraphBannedPerRow,
              "a decode graph of ", num_seqs, " sequences holds ", num_seqs * kGraphBannedPerRow,
              " banned ids, the batch has ", sampling.banned.size());
  std::copy(sampling.rows.begin(), sampling.rows.end(), host.begin() + layout.sampling);
  std::copy(sampling.banned.begin(), sampling.banned.end(), host.begin() + layout.banned);
  backend_->copy_from_host(graph_inputs_.data(), host.data(), host.size() * sizeof(int32_t));
}

const ModelRunner::DecodeGraph* ModelRunner::graph_for(
    const std::vector<ScheduledRequest>& batch) const {
  if (graphs_.empty() || batch.empty()) return nullptr;
  const auto num_eos = static_cast<int64_t>(model_->config().eos_token_ids.size());
  int64_t banned = 0;
  for (const ScheduledRequest& entry : batch) {
    const Request& request = *entry.request;
    // One new token that completes the sequence (so it samples), in a table the graph covers.
    if (entry.num_new_tokens != 1 || request.num_computed_tokens + 1 != request.num_tokens() ||
        static_cast<int64_t>(request.block_ids.size()) > graph_blocks_) {
      return nullptr;
    }
    if (bans_stop_ids(request)) {
      banned += num_eos + static_cast<int64_t>(request.params.stop_token_ids.size());
    }
    // Adjusted draws need the ids buffer's other ranges, which graphs do not hold.
    if (request.params.needs_adjusted_sampling()) return nullptr;
  }
  const auto num_seqs = static_cast<int64_t>(batch.size());
  // Measured against the batch, not the bucket, so any bucket the group agrees on holds them.
  if (banned > num_seqs * kGraphBannedPerRow) return nullptr;
  for (const DecodeGraph& graph : graphs_) {
    if (graph.num_seqs >= num_seqs) return &graph;
  }
  return nullptr;
}

StepSamples ModelRunner::replay(const DecodeGraph& graph,
                                const std::vector<ScheduledRequest>& batch) {
  upload_graph_inputs(graph.num_seqs, batch);
  backend_->replay(graph.id);
  ++num_graph_steps_;
  StepSamples result;
  for (const ScheduledRequest& entry : batch) result.requests.push_back(entry.request);
  // Only the real sequences' rows: the padding rows come after them.
  result.tokens = download_samples(graph.samples, static_cast<int64_t>(batch.size()));
  return result;
}

void ModelRunner::release_graphs() {
  for (const DecodeGraph& graph : graphs_) backend_->release_graph(graph.id);
  graphs_.clear();
}

void ModelRunner::capture_decode_graphs(int64_t max_num_seqs) {
  if (!captures_graphs() || max_num_seqs <= 0) return;
  TIDAL_CHECK(workspace_.locked(), "decode graphs are captured after warm_up_workspace");
  const auto start = std::chrono::steady_clock::now();
  const int64_t block_size = kv_cache_->block_size();
  const int64_t context =
      std::min(graph_options_.max_context, kv_cache_->num_blocks() * block_size);
  graph_blocks_ = std::max<int64_t>(1, (context + block_size - 1) / block_size);
  const std::vector<int64_t> buckets = decode_graph_buckets(max_num_seqs);
  const int64_t largest = buckets.back();
  const auto bytes = static_cast<size_t>(graph_layout(largest).total) * sizeof(int32_t);
  if (graph_inputs_.bytes() < bytes) graph_inputs_ = backend_->allocate(bytes);
  // One eager step of the largest bucket (all padding) first: the warm-up ran it already, with
  // a table at least this wide, so it allocates nothing; it also runs every kernel once on the
  // cache's final addresses. No smaller bucket needs more. Capturing records work without
  // running it.
  upload_graph_inputs(largest, {});
  workspace_.begin_step();
  decode_graph_step(largest);
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
    Tensor samples;
    try {
      samples = decode_graph_step(*bucket);
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
      captured.push_back({.num_seqs = *bucket, .id = backend_->end_capture(), .samples = samples});
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
