// tidal bench's measurements: every time is a host clock around many steps that ends with a
// device synchronisation, after warm-up steps that grow the workspace and scratch.
#include "apps/tidal/bench_runner.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "backend/workspace.h"
#include "common/logging.h"
#include "engine/kv_cache.h"
#include "engine/kv_cache_plan.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "model/synthetic_batch.h"

namespace tidal::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Seconds per call of `step`, over `iterations` calls after `warm_up` untimed ones.
template <typename Step>
double time_steps(Backend& backend, int warm_up, int iterations, Step&& step) {
  for (int i = 0; i < warm_up; ++i) step();
  backend.synchronize();
  const auto start = Clock::now();
  for (int i = 0; i < iterations; ++i) step();
  backend.synchronize();
  return std::chrono::duration<double>(Clock::now() - start).count() / iterations;
}

Tensor random_tensor(Backend& backend, std::vector<DeviceBuffer>& owned, DType dtype,
                     std::initializer_list<int64_t> shape, uint64_t seed) {
  Tensor tensor{.data = nullptr, .dtype = dtype, .shape = shape, .device = backend.device()};
  owned.push_back(backend.allocate(tensor.num_bytes()));
  tensor.data = owned.back().data();
  backend.fill_random(tensor, {.seed = seed, .first_index = 0, .center = 0.0f, .half_width = 1.0f});
  return tensor;
}

}  // namespace

Tensor CountingExecutor::run(Backend& backend, Workspace& workspace, int64_t moe_layer,
                             const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights,
                             const ExpertSlots& slots, const Tensor& token_ids) {
  if (counting_) {
    std::vector<int32_t> ids(static_cast<size_t>(topk_ids.num_elements()));
    backend.copy_to_host(ids.data(), topk_ids.data, ids.size() * sizeof(int32_t));
    if (counts_.size() <= static_cast<size_t>(moe_layer)) {
      counts_.resize(static_cast<size_t>(moe_layer) + 1);
    }
    std::vector<int64_t>& layer = counts_[static_cast<size_t>(moe_layer)];
    for (const int32_t id : ids) {
      if (id < 0) continue;
      if (layer.size() <= static_cast<size_t>(id)) layer.resize(static_cast<size_t>(id) + 1, 0);
      ++layer[static_cast<size_t>(id)];
    }
  }
  ExpertExecutor& executor = inner_ != nullptr ? *inner_ : local_;
  return executor.run(backend, workspace, moe_layer, x, topk_ids, topk_weights, slots, token_ids);
}

std::vector<int64_t> distinct_experts(const std::vector<std::vector<int64_t>>& counts) {
  std::vector<int64_t> distinct;
  for (const std::vector<int64_t>& layer : counts) {
    distinct.push_back(std::count_if(layer.begin(), layer.end(), [](int64_t n) { return n > 0; }));
  }
  return distinct;
}

Ceilings measure_ceilings(Backend& backend, size_t copy_bytes, int64_t matmul_size,
                          int iterations) {
  Ceilings ceilings;
  {
    std::vector<DeviceBuffer> owned;
    const auto elements = static_cast<int64_t>(copy_bytes / 2);
    const Tensor src = random_tensor(backend, owned, DType::kBF16, {elements}, 1);
    const Tensor dst = random_tensor(backend, owned, DType::kBF16, {elements}, 2);
    const double seconds = time_steps(backend, 2, iterations, [&] {
      backend.copy_on_device(dst.data, src.data, src.num_bytes());
    });
    ceilings.copy_bytes_per_s = 2.0 * static_cast<double>(src.num_bytes()) / seconds;
  }
  {
    std::vector<DeviceBuffer> owned;
    const int64_t n = matmul_size;
    // bf16 weights; activations in the backend's dtype (bf16 on CUDA, f32 on the CPU).
    const DType act = backend.activation_dtype();
    const Tensor x = random_tensor(backend, owned, act, {n, n}, 3);
    const Tensor w = random_tensor(backend, owned, DType::kBF16, {n, n}, 4);
    const Tensor out = random_tensor(backend, owned, act, {n, n}, 5);
    const double seconds =
        time_steps(backend, 2, iterations, [&] { backend.linear(x, w, nullptr, out); });
    const auto size = static_cast<double>(n);
    ceilings.matmul_flops_per_s = 2.0 * size * size * size / seconds;
    ceilings.matmul_size = n;
  }
  return ceilings;
}

struct ModelBench::State {
  std::unique_ptr<KvCache> kv_cache;
  Workspace workspace;
  explicit State(Backend& backend) : workspace(backend) {}
};

ModelBench::ModelBench(Backend& backend, CausalLm& model, CountingExecutor& counter,
                       const BenchPlan& plan)
    : backend_(&backend),
      model_(&model),
      counter_(&counter),
      plan_(plan),
      state_(std::make_unique<State>(backend)) {
  // One block until a measurement asks for more (fit_decode, fit_prefill).
  state_->kv_cache = std::make_unique<KvCache>(backend, model.config(), 1, plan.block_size);
}

std::optional<std::string> ModelBench::fit_kv_cache(int64_t blocks, size_t step_bytes,
                                                    const char* what) {
  KvCache& cache = *state_->kv_cache;
  // Already this size: it fitted then, and the steps since only used it.
  if (blocks == cache.num_blocks()) return std::nullopt;
  const size_t per_block =
      KvCache::bytes_per_block(model_->config(), plan_.block_size, backend_->activation_dtype());
  const size_t needed = static_cast<size_t>(blocks) * per_block;
  const size_t held = static_cast<size_t>(cache.num_blocks()) * per_block;
  const MemoryInfo memory = backend_->memory_info();
  // Headroom for what this process allocates besides (kernel scratch, graphs, a communicator):
  // 1 GiB or 5% of the device, whichever is more.
  const size_t headroom = std::max(size_t{1} << 30, memory.total_bytes / 20);
  const size_t free_for_cache = memory.free_bytes + held;
  const size_t usable =
      free_for_cache > headroom + step_bytes ? free_for_cache - headroom - step_bytes : 0;
  if (plan_.kv_cache_bytes > 0 && needed > plan_.kv_cache_bytes) {
    return cat(what, " needs a KV cache of ", blocks, " blocks (", format_bytes(needed),
               "), more than --kv-cache-memory ", format_bytes(plan_.kv_cache_bytes));
  }
  if (needed > usable) {
    return cat(what, " needs a KV cache of ", blocks, " blocks (", format_bytes(needed), ") and ",
               format_bytes(step_bytes), " more for its step; ", format_bytes(free_for_cache),
               " of ", format_bytes(memory.total_bytes),
               " is free for it after the weights and the workspace, less a headroom of ",
               format_bytes(headroom));
  }
  cache.reallocate(blocks);
  // Random keys and values: attention over zeros would be no cheaper, but nothing reads as real.
  uint64_t seed = plan_.seed + 100;
  for (const KvCacheLayer& layer : cache.layers()) {
    for (const Tensor& pool : {layer.key, layer.value}) {
      backend_->fill_random(pool,
                            {.seed = seed++, .first_index = 0, .center = 0.0f, .half_width = 1.0f});
    }
  }
  backend_->synchronize();
  log_info("bench: KV cache of ", blocks, " blocks of ", plan_.block_size, " tokens, ",
           format_bytes(needed), " for ", what);
  return std::nullopt;
}

std::optional<std::string> ModelBench::fit_decode(int64_t batch) {
  const SyntheticBatchSpec spec{.num_seqs = batch,
                                .new_tokens = 1,
                                .cached_tokens = plan_.context - 1,
                                .block_size = plan_.block_size};
  // A decode step's workspace grows little with the batch (one token per sequence); the
  // headroom covers it.
  return fit_kv_cache(spec.num_blocks(), 0, cat("decode at batch ", batch).c_str());
}

std::optional<std::string> ModelBench::fit_prefill() {
  const SyntheticBatchSpec spec{
      .num_seqs = 1, .new_tokens = plan_.prefill_tokens, .block_size = plan_.block_size};
  // The workspace keeps every layer's activations of a step, so it grows in proportion to the
  // step's tokens, plus one row of f32 logits per sampled sequence: the largest decode step so
  // far measured the per-token part (its logits taken out; the prefill samples one row).
  const Workspace& workspace = state_->workspace;
  size_t step_bytes = 0;
  if (largest_decode_ > 0) {
    const auto logits_row = static_cast<size_t>(model_->config().vocab_size) * sizeof(float);
    const auto decode_rows = static_cast<size_t>(largest_decode_);
    const size_t high_water = workspace.high_water_bytes();
    const size_t activations =
        high_water > decode_rows * logits_row ? high_water - decode_rows * logits_row : 0;
    const size_t needed =
        activations / decode_rows * static_cast<size_t>(plan_.prefill_tokens) + logits_row;
    // Beyond what the workspace already holds (at least its high-water mark).
    step_bytes = needed > high_water ? needed - high_water : 0;
  }
  return fit_kv_cache(spec.num_blocks(), step_bytes,
                      cat("prefill of ", plan_.prefill_tokens, " tokens").c_str());
}

ModelBench::~ModelBench() = default;

ModelBench::DecodeRun ModelBench::run_decode(int64_t batch) {
  const ModelConfig& config = model_->config();
  largest_decode_ = std::max(largest_decode_, batch);
  const SyntheticBatch inputs(*backend_, {.num_seqs = batch,
                                          .new_tokens = 1,
                                          .cached_tokens = plan_.context - 1,
                                          .block_size = plan_.block_size,
                                          .vocab_size = config.vocab_size,
                                          .seed = plan_.seed + static_cast<uint64_t>(batch)});
  Workspace& workspace = state_->workspace;
  const auto step = [&] {
    workspace.begin_step();
    model_->forward(inputs.batch(), state_->kv_cache->layers(), workspace);
  };
  step();  // grows the workspace and the backend's scratch, outside the timing
  counter_->start_counting();
  step();
  DecodeRun run;
  run.expert_counts = counter_->stop_counting();
  run.step_seconds = time_steps(*backend_, 2, plan_.iterations, step);
  if (plan_.graphs && backend_->supports_graphs()) {
    // The eager steps above sized the workspace and scratch, so the capture allocates nothing.
    workspace.begin_step();
    backend_->begin_capture();
    model_->forward(inputs.batch(), state_->kv_cache->layers(), workspace);
    const int64_t graph = backend_->end_capture();
    run.graph_step_seconds =
        time_steps(*backend_, 2, plan_.iterations, [&] { backend_->replay(graph); });
    // The next batch may grow the kernel scratch this graph reads.
    backend_->release_graph(graph);
  }
  return run;
}

DecodeResult ModelBench::decode(int64_t batch, const Ceilings& ceilings) {
  const ModelConfig& config = model_->config();
  const DecodeRun run = run_decode(batch);
  DecodeResult result;
  result.batch = batch;
  result.context = plan_.context;
  result.step_seconds = run.step_seconds;
  result.graph_step_seconds = run.graph_step_seconds;
  result.touched_experts = distinct_experts(run.expert_counts);
  const double weight_bytes = static_cast<double>(dtype_size(config.dtype));
  const double kv_bytes = static_cast<double>(dtype_size(backend_->activation_dtype()));
  result.floor_bytes = decode_step_bytes(config, batch, plan_.context, result.touched_experts,
                                         weight_bytes, kv_bytes);
  result.floor_seconds = result.floor_bytes.total() / ceilings.copy_bytes_per_s;
  return result;
}

ModelBench::ServingDecode ModelBench::serving_decode(const std::vector<int64_t>& batch_sizes) {
  ServingDecode result;
  if (batch_sizes.empty()) return result;
  const int64_t largest = *std::max_element(batch_sizes.begin(), batch_sizes.end());
  ModelRunner runner(*backend_, *model_, *state_->kv_cache);
  runner.warm_up(largest, largest);
  result.num_graphs = runner.num_decode_graphs();
  result.capture_seconds = runner.last_capture_seconds();
  const int64_t blocks_per_seq = (plan_.context + plan_.block_size - 1) / plan_.block_size;
  std::mt19937 random(static_cast<uint32_t>(plan_.seed));
  std::uniform_int_distribution<int32_t> token(
      0, static_cast<int32_t>(model_->config().vocab_size) - 1);
  for (const int64_t batch : batch_sizes) {
    // Sequence s owns blocks [s * blocks_per_seq, ...) as in the eager rows; the last token of
    // its context is this step's.
    std::vector<std::unique_ptr<Request>> requests;
    std::vector<ScheduledRequest> scheduled;
    for (int64_t s = 0; s < batch; ++s) {
      auto request = std::make_unique<Request>();
      request->prompt_ids.resize(static_cast<size_t>(plan_.context));
      for (int32_t& id : request->prompt_ids) id = token(random);
      request->num_computed_tokens = plan_.context - 1;
      for (int64_t b = 0; b < blocks_per_seq; ++b) {
        request->block_ids.push_back(static_cast<int32_t>(s * blocks_per_seq + b));
      }
      scheduled.push_back({.request = request.get(), .num_new_tokens = 1});
      requests.push_back(std::move(request));
    }
    runner.run(scheduled);  // the first replay of a graph uploads it to the device
    result.step_seconds.push_back(
        time_steps(*backend_, 2, plan_.iterations, [&] { runner.run(scheduled); }));
  }
  return result;
}

PrefillResult ModelBench::prefill(const Ceilings& ceilings) {
  const ModelConfig& config = model_->config();
  const SyntheticBatch inputs(*backend_, {.num_seqs = 1,
                                          .new_tokens = plan_.prefill_tokens,
                                          .cached_tokens = 0,
                                          .block_size = plan_.block_size,
                                          .vocab_size = config.vocab_size,
                                          .seed = plan_.seed + 7});
  Workspace& workspace = state_->workspace;
  const auto step = [&] {
    workspace.begin_step();
    model_->forward(inputs.batch(), state_->kv_cache->layers(), workspace);
  };
  PrefillResult result;
  result.tokens = plan_.prefill_tokens;
  result.step_seconds = time_steps(*backend_, 1, plan_.prefill_iterations, step);
  result.flops = prefill_flops(config, plan_.prefill_tokens);
  result.floor_seconds = result.flops.total() / ceilings.matmul_flops_per_s;
  return result;
}

}  // namespace tidal::cli
