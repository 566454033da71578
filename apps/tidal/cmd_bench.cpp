// `tidal bench`: decode step time per batch size and prefill throughput of a model (dummy
// weights of a config's shapes, or a checkpoint), each beside its floor on this device: bytes
// over the measured copy bandwidth for decode, FLOPs over the measured bf16 matmul rate for
// prefill. Prints a table; --json writes every number.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/tidal/bench_ranks.h"
#include "apps/tidal/bench_runner.h"
#include "apps/tidal/commands.h"
#include "apps/tidal/int_list.h"
#include "model/load_model.h"

namespace tidal::cli {
namespace {

std::vector<int64_t> parse_positive_list(const std::string& text, const std::string& option) {
  return parse_int_list(text, option, 1, INT64_MAX, "a positive integer");
}

struct BenchOptions {
  std::string device = "cuda";
  std::string load_format = "dummy";
  std::string config;
  std::string model;
  int64_t num_layers = 0;
  std::string batch_sizes = "1,8,32,64,128,256";
  BenchPlan plan;
  size_t copy_mib = 2048;
  int64_t matmul_size = 8192;
  std::string json;
  int ranks = 1;
  std::string all_to_all_tokens = "16,128,512,2048,8192";
};

// The command with every setting spelled out, for the report.
std::string command_line(const BenchOptions& o) {
  std::ostringstream line;
  line << "tidal bench --device " << o.device << " --load-format " << o.load_format;
  if (o.load_format == "dummy") {
    line << " --config " << o.config;
  } else {
    line << " --model " << o.model;
  }
  if (o.num_layers != 0) line << " --num-layers " << o.num_layers;
  if (o.ranks > 1) line << " --ranks " << o.ranks << " --all-to-all-tokens " << o.all_to_all_tokens;
  line << " --batch-sizes " << o.batch_sizes << " --context " << o.plan.context
       << " --prefill-tokens " << o.plan.prefill_tokens << " --iterations " << o.plan.iterations
       << " --prefill-iterations " << o.plan.prefill_iterations << " --seed " << o.plan.seed
       << " --copy-mib " << o.copy_mib << " --matmul-size " << o.matmul_size;
  if (o.plan.kv_cache_bytes > 0) line << " --kv-cache-memory " << o.plan.kv_cache_bytes;
  return line.str();
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

double mean(const std::vector<int64_t>& values) {
  if (values.empty()) return 0;
  return static_cast<double>(std::accumulate(values.begin(), values.end(), int64_t{0})) /
         static_cast<double>(values.size());
}

nlohmann::json decode_json(const DecodeResult& r) {
  return {{"batch", r.batch},
          {"context", r.context},
          {"step_ms", r.step_seconds * 1e3},
          {"tokens_per_s", static_cast<double>(r.batch) / r.step_seconds},
          {"graph_step_ms", r.graph_step_seconds * 1e3},
          {"graph_tokens_per_s",
           r.graph_step_seconds > 0 ? static_cast<double>(r.batch) / r.graph_step_seconds : 0.0},
          {"graph_ratio_to_floor", r.graph_step_seconds / r.floor_seconds},
          {"touched_experts_per_moe_layer", r.touched_experts},
          {"floor_bytes",
           {{"dense_weights", r.floor_bytes.dense_weights},
            {"expert_weights", r.floor_bytes.expert_weights},
            {"kv_cache", r.floor_bytes.kv_cache},
            {"total", r.floor_bytes.total()}}},
          {"floor_ms", r.floor_seconds * 1e3},
          {"ratio_to_floor", r.step_seconds / r.floor_seconds}};
}

void write_json(const std::string& path, const nlohmann::json& report) {
  std::ofstream out(path);
  TIDAL_CHECK(out.good(), path, ": cannot write");
  out << report.dump(2) << "\n";
}

// --ranks R: R GPUs of this machine under expert parallelism (dummy weights only).
int run_rank_bench_command(const BenchOptions& options) {
  TIDAL_CHECK(options.load_format == "dummy", "--ranks needs --load-format dummy");
  TIDAL_CHECK(options.device == "cuda", "--ranks runs rank r on cuda:r: give --device cuda");
  std::printf("%s\n", command_line(options).c_str());
  RankBenchOptions rank_options;
  rank_options.num_ranks = options.ranks;
  rank_options.model = {
      .config_file = options.config, .num_layers = options.num_layers, .seed = options.plan.seed};
  rank_options.plan = options.plan;
  rank_options.plan.batch_sizes = parse_positive_list(options.batch_sizes, "--batch-sizes");
  rank_options.all_to_all_tokens =
      parse_positive_list(options.all_to_all_tokens, "--all-to-all-tokens");
  nlohmann::json report = run_rank_bench(rank_options);
  report["date"] = utc_now();
  report["command"] = command_line(options);
  if (!options.json.empty()) write_json(options.json, report);
  return 0;
}

int run_bench(const BenchOptions& options) {
  if (options.ranks > 1) return run_rank_bench_command(options);
  BenchPlan plan = options.plan;
  plan.batch_sizes = parse_positive_list(options.batch_sizes, "--batch-sizes");
  auto backend = make_backend(options.device);
  std::printf("%s\n", command_line(options).c_str());

  std::printf("measuring the ceilings: a %zu MiB device copy, a %lld^3 GEMM of bf16 weights\n",
              options.copy_mib, static_cast<long long>(options.matmul_size));
  const Ceilings ceilings =
      measure_ceilings(*backend, options.copy_mib << 20, options.matmul_size, 20);
  std::printf("copy bandwidth %.0f GB/s (read + write), bf16 matmul %.1f TFLOP/s\n",
              ceilings.copy_bytes_per_s / 1e9, ceilings.matmul_flops_per_s / 1e12);

  CountingExecutor counter;
  ModelShard shard;  // every expert local, through the counter
  shard.executor = &counter;
  std::unique_ptr<CausalLm> model;
  if (options.load_format == "dummy") {
    model = load_dummy_model(
        {.config_file = options.config, .num_layers = options.num_layers, .seed = plan.seed},
        *backend, shard);
  } else {
    TIDAL_CHECK(!options.model.empty(), "--load-format ", options.load_format,
                " needs --model DIR");
    TIDAL_CHECK(options.num_layers == 0, "--num-layers needs --load-format dummy");
    model = load_model(options.model, *backend, shard);
  }
  const ModelConfig& config = model->config();
  ModelBench bench(*backend, *model, counter, plan);
  const double kv_element_bytes = static_cast<double>(dtype_size(backend->activation_dtype()));
  const double kv_per_token = kv_cache_bytes_per_token(config, kv_element_bytes);
  const double kv_per_token_mha = multi_head_kv_cache_bytes_per_token(config, kv_element_bytes);
  std::printf(
      "%s: KV cache %.0f bytes per token over %lld layers; multi-head attention of the same "
      "%lld heads would keep %.0f (%.1fx)\n",
      config.architecture.c_str(), kv_per_token, static_cast<long long>(config.num_layers),
      static_cast<long long>(config.num_heads), kv_per_token_mha, kv_per_token_mha / kv_per_token);

  // What did not fit the device, and why: said as it happens and kept for the report.
  nlohmann::json skipped = nlohmann::json::array();
  const auto skip = [&](const std::string& reason) {
    std::printf("skipped: %s\n", reason.c_str());
    std::fflush(stdout);
    skipped.push_back(reason);
  };
  nlohmann::json decode_rows = nlohmann::json::array();
  std::vector<double> floors;
  std::vector<int64_t> measured_batches;
  std::printf("\ndecode, context %lld, %lld layers (%s)\n", static_cast<long long>(plan.context),
              static_cast<long long>(config.num_layers), backend->name().c_str());
  std::printf("%6s %10s %10s %11s %9s %9s %10s %7s %7s\n", "batch", "eager ms", "graph ms",
              "tokens/s", "experts", "GB read", "floor ms", "eager", "graph");
  for (const int64_t batch : plan.batch_sizes) {
    if (const std::optional<std::string> why = bench.fit_decode(batch)) {
      skip(*why);
      continue;
    }
    measured_batches.push_back(batch);
    const DecodeResult r = bench.decode(batch, ceilings);
    // tokens/s of the faster of the two; the last two columns are each time over the floor.
    const double best =
        r.graph_step_seconds > 0 ? std::min(r.step_seconds, r.graph_step_seconds) : r.step_seconds;
    std::printf("%6lld %10.3f %10.3f %11.0f %9.1f %9.2f %10.3f %7.2f %7.2f\n",
                static_cast<long long>(batch), r.step_seconds * 1e3, r.graph_step_seconds * 1e3,
                static_cast<double>(batch) / best, mean(r.touched_experts),
                r.floor_bytes.total() / 1e9, r.floor_seconds * 1e3,
                r.step_seconds / r.floor_seconds, r.graph_step_seconds / r.floor_seconds);
    std::fflush(stdout);
    decode_rows.push_back(decode_json(r));
    floors.push_back(r.floor_seconds);
  }

  nlohmann::json served = nullptr;
  if (plan.graphs && backend->supports_graphs() && !measured_batches.empty()) {
    // Sized for the largest batch measured above (the largest that fits).
    const auto largest = std::max_element(measured_batches.begin(), measured_batches.end());
    if (const std::optional<std::string> why = bench.fit_decode(*largest)) {
      TIDAL_FAIL("the KV cache for batch ", *largest, " fitted before and no longer does: ", *why);
    }
    const ModelBench::ServingDecode s = bench.serving_decode(measured_batches);
    std::printf(
        "\ndecode as the engine runs it (ModelRunner: inputs uploaded, the bucket's graph "
        "replayed with the draw, tokens downloaded)\n%lld graphs captured in %.3f s\n%6s %10s %11s "
        "%7s\n",
        static_cast<long long>(s.num_graphs), s.capture_seconds, "batch", "step ms", "tokens/s",
        "/floor");
    nlohmann::json rows = nlohmann::json::array();
    for (size_t i = 0; i < measured_batches.size(); ++i) {
      const double seconds = s.step_seconds[i];
      const auto batch = static_cast<double>(measured_batches[i]);
      std::printf("%6lld %10.3f %11.0f %7.2f\n", static_cast<long long>(measured_batches[i]),
                  seconds * 1e3, batch / seconds, seconds / floors[i]);
      rows.push_back({{"batch", measured_batches[i]},
                      {"step_ms", seconds * 1e3},
                      {"tokens_per_s", batch / seconds},
                      {"ratio_to_floor", seconds / floors[i]}});
    }
    std::fflush(stdout);
    served = {
        {"num_graphs", s.num_graphs}, {"capture_seconds", s.capture_seconds}, {"decode", rows}};
  }

  nlohmann::json prefill = nullptr;
  std::optional<std::string> prefill_skipped;
  if (plan.prefill_tokens > 0) prefill_skipped = bench.fit_prefill();
  if (prefill_skipped) skip(*prefill_skipped);
  if (plan.prefill_tokens > 0 && !prefill_skipped) {
    const PrefillResult r = bench.prefill(ceilings);
    const double rate = r.flops.total() / r.step_seconds;
    std::printf(
        "\nprefill of %lld tokens: %.1f ms, %.0f tokens/s, %.1f TFLOP/s = %.1f%% of the "
        "matmul rate (floor %.1f ms, ratio %.2f)\n",
        static_cast<long long>(r.tokens), r.step_seconds * 1e3,
        static_cast<double>(r.tokens) / r.step_seconds, rate / 1e12,
        100.0 * rate / ceilings.matmul_flops_per_s, r.floor_seconds * 1e3,
        r.step_seconds / r.floor_seconds);
    prefill = {{"tokens", r.tokens},
               {"step_ms", r.step_seconds * 1e3},
               {"tokens_per_s", static_cast<double>(r.tokens) / r.step_seconds},
               {"flops", {{"matmul", r.flops.matmul}, {"attention", r.flops.attention}}},
               {"tflops_per_s", rate / 1e12},
               {"fraction_of_matmul_rate", rate / ceilings.matmul_flops_per_s},
               {"floor_ms", r.floor_seconds * 1e3},
               {"ratio_to_floor", r.step_seconds / r.floor_seconds}};
  }

  if (!options.json.empty()) {
    const nlohmann::json report = {
        {"date", utc_now()},
        {"command", command_line(options)},
        {"device", backend->name()},
        {"model",
         {{"config", options.load_format == "dummy" ? options.config : options.model},
          {"load_format", options.load_format},
          {"num_layers", config.num_layers},
          {"hidden_size", config.hidden_size},
          {"num_experts", config.num_experts},
          {"num_experts_per_tok", config.num_experts_per_tok},
          {"moe_intermediate_size", config.moe_intermediate_size},
          {"num_heads", config.num_heads},
          {"num_kv_heads", config.num_kv_heads},
          {"head_dim", config.head_dim},
          {"architecture", config.architecture},
          {"kv_cache_bytes_per_token", kv_per_token},
          {"multi_head_kv_cache_bytes_per_token", kv_per_token_mha},
          {"vocab_size", config.vocab_size}}},
        {"ceilings",
         {{"copy_GB_per_s", ceilings.copy_bytes_per_s / 1e9},
          {"matmul_TFLOP_per_s", ceilings.matmul_flops_per_s / 1e12},
          {"matmul_size", ceilings.matmul_size}}},
        {"decode", decode_rows},
        {"decode_served", served},
        {"prefill", prefill},
        {"skipped", skipped}};
    write_json(options.json, report);
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* command = app.add_subcommand(
      "bench", "decode and prefill step times of a model beside their floors on this device");
  command->add_option("--device", options->device, "cuda, cuda:N or cpu")->capture_default_str();
  command
      ->add_option("--load-format", options->load_format,
                   "dummy (random weights of --config's shapes) or auto (--model's files)")
      ->check(CLI::IsMember({"dummy", "auto"}))
      ->capture_default_str();
  command->add_option("--config", options->config, "config.json for --load-format dummy");
  command->add_option("--model", options->model, "checkpoint directory for --load-format auto");
  command->add_option("--num-layers", options->num_layers,
                      "use only the first N layers of the config (dummy weights)");
  command->add_option("--batch-sizes", options->batch_sizes, "decode batch sizes")
      ->capture_default_str();
  command
      ->add_option("--context", options->plan.context,
                   "each decoding sequence's context, this step's token included")
      ->capture_default_str();
  command
      ->add_option("--prefill-tokens", options->plan.prefill_tokens,
                   "tokens of the one-sequence prefill (0: none)")
      ->capture_default_str();
  command->add_option("--iterations", options->plan.iterations, "timed decode steps per batch")
      ->capture_default_str();
  command
      ->add_option("--prefill-iterations", options->plan.prefill_iterations, "timed prefill steps")
      ->capture_default_str();
  command->add_option("--seed", options->plan.seed, "seed of weights and inputs")
      ->capture_default_str();
  command->add_option("--copy-mib", options->copy_mib, "size of the bandwidth copy")
      ->capture_default_str();
  command->add_option("--matmul-size", options->matmul_size, "M = N = K of the rate GEMM")
      ->capture_default_str();
  command->add_option("--json", options->json, "write every number to this file");
  command
      ->add_option("--kv-cache-memory", options->plan.kv_cache_bytes,
                   "the most the KV cache may take (512MiB, 24GiB or bytes; default: the free "
                   "memory); a measurement that needs more is skipped")
      ->transform(CLI::AsSizeValue(true));
  command->add_flag("!--no-graphs", options->plan.graphs,
                    "time decode launched op by op only (no captured graph)");
  command
      ->add_option("--ranks", options->ranks,
                   "R > 1: R GPUs under expert parallelism (NVLink, all-to-all, decode)")
      ->capture_default_str();
  command
      ->add_option("--all-to-all-tokens", options->all_to_all_tokens,
                   "tokens per rank of each all-to-all size (--ranks)")
      ->capture_default_str();
  return [options] { return run_bench(*options); };
}

}  // namespace tidal::cli
