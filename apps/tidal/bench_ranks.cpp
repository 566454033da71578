// The rank bench: one thread per GPU, each with its backend, NCCL communicator, expert-parallel
// executor and model shard, stepping together as rank processes do.
#include "apps/tidal/bench_ranks.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/kv_store.h"
#include "comm/nccl_communicator.h"
#include "engine/expert_parallel.h"
#include "eplb/placement_policy.h"
#include "eplb/replica_tables.h"
#include "model/load_model.h"

namespace tidal::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What the ranks share: inputs, and each rank's results to gather once every rank has written.
struct Shared {
  const RankBenchOptions* options = nullptr;
  std::string store_endpoint;
  std::mutex mutex;
  std::vector<std::string> errors;
  double p2p_seconds = 0;
  // [size] seconds per all-to-all, the slowest rank's.
  std::vector<double> all_to_all_seconds;
  // [batch][rank]: step seconds and [MoE layer][expert] choice counts.
  std::vector<std::vector<double>> step_seconds;
  std::vector<std::vector<std::vector<std::vector<int64_t>>>> expert_counts;
  std::vector<std::vector<int32_t>> slot_experts;  // [rank] logical expert of each local slot
  double copy_bytes_per_s = 0;                     // rank 0's, for the floors
};

Tensor device_buffer(Backend& backend, std::vector<DeviceBuffer>& owned, size_t bytes) {
  owned.push_back(backend.allocate(bytes));
  const Tensor tensor{.data = owned.back().data(),
                      .dtype = DType::kBF16,
                      .shape = {static_cast<int64_t>(bytes / 2)},
                      .device = backend.device()};
  backend.fill_random(tensor, {.seed = bytes, .first_index = 0, .center = 0, .half_width = 1});
  return tensor;
}

void run_rank(Shared& shared, int rank) {
  const RankBenchOptions& options = *shared.options;
  const int num_ranks = options.num_ranks;
  auto backend = make_backend(cat("cuda:", rank));
  KvStoreClient store({.endpoint = shared.store_endpoint, .timeout = std::chrono::seconds(120)});
  NcclOptions nccl;
  nccl.store = &store;
  nccl.rank = rank;
  nccl.size = num_ranks;
  nccl.timeout = std::chrono::seconds(120);
  const auto group = make_nccl_communicator_for(*backend, nccl);

  if (rank == 0) {
    shared.copy_bytes_per_s =
        measure_ceilings(*backend, size_t{2} << 30, 1024, 10).copy_bytes_per_s;
  }
  group->barrier();

  // The link: rank 0 sends to rank 1, the others wait. A send returns once the peer has the
  // bytes, so rank 0's clock covers the whole transfer.
  {
    std::vector<DeviceBuffer> owned;
    const Tensor buffer = device_buffer(*backend, owned, options.p2p_bytes);
    constexpr int kIterations = 5;
    for (int i = -1; i < kIterations; ++i) {  // i = -1: a warm-up transfer
      group->barrier();
      const auto start = Clock::now();
      if (rank == 0) group->send(1, buffer.data, options.p2p_bytes);
      if (rank == 1) group->recv(0, buffer.data, options.p2p_bytes);
      if (rank == 0 && i >= 0) shared.p2p_seconds += seconds_since(start) / kIterations;
    }
    group->barrier();
  }

  // The all-to-all of a MoE layer's dispatch: tokens x k rows of hidden bf16 per rank, spread
  // evenly over the ranks (uniform routing), this rank's own share copied locally.
  const ModelConfig config = load_dummy_config(options.model);
  const size_t row_bytes = static_cast<size_t>(config.hidden_size) * 2;
  for (size_t s = 0; s < options.all_to_all_tokens.size(); ++s) {
    const size_t rows =
        static_cast<size_t>(options.all_to_all_tokens[s] * config.num_experts_per_tok);
    std::vector<size_t> counts(static_cast<size_t>(num_ranks));
    for (int r = 0; r < num_ranks; ++r) {
      counts[static_cast<size_t>(r)] =
          (rows / num_ranks + (static_cast<size_t>(r) < rows % num_ranks ? 1 : 0)) * row_bytes;
    }
    std::vector<DeviceBuffer> owned;
    const Tensor send = device_buffer(*backend, owned, rows * row_bytes);
    const Tensor recv = device_buffer(*backend, owned, (rows + num_ranks) * row_bytes);
    // Every rank sends counts[r] to rank r and so receives counts[rank] from each.
    const std::vector<size_t> recv_counts(static_cast<size_t>(num_ranks),
                                          counts[static_cast<size_t>(rank)]);
    constexpr int kIterations = 20;
    for (int i = 0; i < 3; ++i) group->all_to_all_v(send.data, counts, recv.data, recv_counts);
    backend->synchronize();
    group->barrier();
    const auto start = Clock::now();
    for (int i = 0; i < kIterations; ++i) {
      group->all_to_all_v(send.data, counts, recv.data, recv_counts);
    }
    backend->synchronize();
    const double seconds = seconds_since(start) / kIterations;
    {
      std::lock_guard lock(shared.mutex);
      shared.all_to_all_seconds[s] = std::max(shared.all_to_all_seconds[s], seconds);
    }
    group->barrier();
  }

  // Decode under expert parallelism: S = ceil(E / R) slots per rank, the start-up placement.
  const auto num_experts = static_cast<int>(config.num_experts);
  const int slots = (num_experts + num_ranks - 1) / num_ranks;
  const eplb::Placement placement = eplb::initial_placement(num_experts, num_ranks, slots);
  const eplb::TableShape shape = eplb::table_shape(num_experts, slots, num_ranks);
  const std::vector<eplb::PlacementTables> tables{eplb::build_tables(placement, shape)};
  ExpertParallelExecutor parallel(*group, tables, shape);
  CountingExecutor counter(&parallel);
  ModelShard shard;
  shard.slot_experts = placement.local_slot_to_logical(rank);
  shard.executor = &counter;
  {
    std::lock_guard lock(shared.mutex);
    shared.slot_experts[static_cast<size_t>(rank)] = shard.slot_experts;
  }
  const auto model = load_dummy_model(options.model, *backend, shard);
  BenchPlan plan = options.plan;
  plan.prefill_tokens = 0;
  plan.graphs = false;  // expert parallelism routes on the host (a sync per layer): no capture
  plan.seed = options.plan.seed + static_cast<uint64_t>(rank) * 1000;  // each rank its own tokens
  ModelBench bench(*backend, *model, counter, plan);
  // Sized once for the largest batch: a rank that skipped a batch the others run would leave
  // their collectives unmatched, so here a batch that does not fit is an error.
  const int64_t largest = *std::max_element(plan.batch_sizes.begin(), plan.batch_sizes.end());
  if (const std::optional<std::string> why = bench.fit_decode(largest)) {
    TIDAL_FAIL("rank ", rank, ": ", *why, "; give --batch-sizes that fit");
  }
  for (size_t b = 0; b < plan.batch_sizes.size(); ++b) {
    group->barrier();
    const ModelBench::DecodeRun run = bench.run_decode(plan.batch_sizes[b]);
    std::lock_guard lock(shared.mutex);
    shared.step_seconds[b][static_cast<size_t>(rank)] = run.step_seconds;
    shared.expert_counts[b][static_cast<size_t>(rank)] = run.expert_counts;
  }
  group->barrier();
}

}  // namespace

nlohmann::json run_rank_bench(const RankBenchOptions& options) {
  TIDAL_CHECK(options.num_ranks >= 2, "--ranks of the rank bench must be at least 2");
  KvStoreServer server;
  Shared shared;
  shared.options = &options;
  shared.store_endpoint = server.endpoint();
  const auto num_ranks = static_cast<size_t>(options.num_ranks);
  const size_t num_batches = options.plan.batch_sizes.size();
  shared.all_to_all_seconds.assign(options.all_to_all_tokens.size(), 0.0);
  shared.step_seconds.assign(num_batches, std::vector<double>(num_ranks, 0.0));
  shared.expert_counts.assign(num_batches,
                              std::vector<std::vector<std::vector<int64_t>>>(num_ranks));
  shared.slot_experts.assign(num_ranks, {});
  std::vector<std::thread> threads;
  for (int rank = 0; rank < options.num_ranks; ++rank) {
    threads.emplace_back([&shared, rank] {
      try {
        run_rank(shared, rank);
      } catch (const std::exception& error) {
        std::lock_guard lock(shared.mutex);
        shared.errors.push_back(cat("rank ", rank, ": ", error.what()));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  if (!shared.errors.empty()) TIDAL_FAIL("rank bench failed: ", shared.errors.front());

  const ModelConfig config = load_dummy_config(options.model);
  const double row_bytes = static_cast<double>(config.hidden_size) * 2.0;
  const double p2p_bytes_per_s = static_cast<double>(options.p2p_bytes) / shared.p2p_seconds;
  nlohmann::json report;
  report["ranks"] = options.num_ranks;
  report["nvlink_p2p"] = {{"bytes", options.p2p_bytes},
                          {"GB_per_s", p2p_bytes_per_s / 1e9},
                          {"how", "NCCL send rank 0 -> rank 1, one direction"}};
  std::printf("\nNVLink point to point (NCCL send 0 -> 1, %zu MiB): %.0f GB/s\n",
              options.p2p_bytes >> 20, p2p_bytes_per_s / 1e9);
  std::printf(
      "\nall-to-all over %d ranks (one dispatch or combine: tokens x %lld rows of %g bytes)\n",
      options.num_ranks, static_cast<long long>(config.num_experts_per_tok), row_bytes);
  std::printf("%10s %14s %10s %10s %7s\n", "tokens", "MiB to others", "us", "GB/s", "ratio");
  nlohmann::json all_to_all = nlohmann::json::array();
  for (size_t s = 0; s < options.all_to_all_tokens.size(); ++s) {
    const double rows =
        static_cast<double>(options.all_to_all_tokens[s] * config.num_experts_per_tok);
    // Bytes a rank sends to the other ranks (its own share stays local).
    const double to_others =
        rows * row_bytes * static_cast<double>(num_ranks - 1) / static_cast<double>(num_ranks);
    const double seconds = shared.all_to_all_seconds[s];
    const double rate = to_others / seconds;
    std::printf("%10lld %14.2f %10.1f %10.1f %7.2f\n",
                static_cast<long long>(options.all_to_all_tokens[s]), to_others / (1 << 20),
                seconds * 1e6, rate / 1e9, rate / p2p_bytes_per_s);
    all_to_all.push_back({{"tokens_per_rank", options.all_to_all_tokens[s]},
                          {"bytes_per_rank_to_others", to_others},
                          {"us", seconds * 1e6},
                          {"GB_per_s", rate / 1e9},
                          {"ratio_to_p2p", rate / p2p_bytes_per_s}});
  }
  report["all_to_all"] = all_to_all;

  // Decode: per rank, the experts of its slots that any rank's tokens chose, its KV, the dense
  // weights; and the rows it sends to other ranks' experts (dispatch, and combine back).
  std::printf("\ndecode under expert parallelism, %d ranks, context %lld, %lld layers\n",
              options.num_ranks, static_cast<long long>(options.plan.context),
              static_cast<long long>(config.num_layers));
  std::printf("%12s %10s %11s %12s %12s %10s %7s\n", "batch/rank", "step ms", "tokens/s", "GB/rank",
              "NVLink MB", "floor ms", "ratio");
  nlohmann::json decode = nlohmann::json::array();
  for (size_t b = 0; b < num_batches; ++b) {
    const int64_t batch = options.plan.batch_sizes[b];
    const auto& counts = shared.expert_counts[b];
    const size_t num_layers = counts[0].size();
    double worst_floor_bytes = 0;
    double worst_link_bytes = 0;
    for (size_t rank = 0; rank < num_ranks; ++rank) {
      std::vector<int64_t> touched(num_layers, 0);
      double link_bytes = 0;
      for (size_t layer = 0; layer < num_layers; ++layer) {
        const auto count_of = [&](size_t r, int32_t expert) -> int64_t {
          const std::vector<int64_t>& row = counts[r][layer];
          return static_cast<size_t>(expert) < row.size() ? row[static_cast<size_t>(expert)] : 0;
        };
        for (const int32_t expert : shared.slot_experts[rank]) {
          int64_t total = 0;
          for (size_t r = 0; r < num_ranks; ++r) total += count_of(r, expert);
          if (total > 0) ++touched[layer];
        }
        int64_t own_rows = 0;
        for (const int32_t expert : shared.slot_experts[rank]) own_rows += count_of(rank, expert);
        int64_t all_rows = 0;
        for (const int64_t n : counts[rank][layer]) all_rows += n;
        link_bytes += 2.0 * static_cast<double>(all_rows - own_rows) * row_bytes;
      }
      const StepBytes bytes = decode_step_bytes(config, batch, options.plan.context, touched,
                                                static_cast<double>(dtype_size(config.dtype)), 2.0);
      worst_floor_bytes = std::max(worst_floor_bytes, bytes.total());
      worst_link_bytes = std::max(worst_link_bytes, link_bytes);
    }
    const double step =
        *std::max_element(shared.step_seconds[b].begin(), shared.step_seconds[b].end());
    const double floor = worst_floor_bytes / shared.copy_bytes_per_s;
    const double tokens_per_s = static_cast<double>(batch) * static_cast<double>(num_ranks) / step;
    std::printf("%12lld %10.3f %11.0f %12.2f %12.1f %10.3f %7.2f\n", static_cast<long long>(batch),
                step * 1e3, tokens_per_s, worst_floor_bytes / 1e9, worst_link_bytes / 1e6,
                floor * 1e3, step / floor);
    decode.push_back({{"batch_per_rank", batch},
                      {"context", options.plan.context},
                      {"step_ms", step * 1e3},
                      {"tokens_per_s", tokens_per_s},
                      {"floor_bytes_per_rank", worst_floor_bytes},
                      {"nvlink_bytes_per_rank", worst_link_bytes},
                      {"floor_ms", floor * 1e3},
                      {"ratio_to_floor", step / floor}});
  }
  report["decode"] = decode;
  report["copy_GB_per_s"] = shared.copy_bytes_per_s / 1e9;
  return report;
}

}  // namespace tidal::cli
