// Starting the engine for the CLI: in-process for one rank, a RankGroup for several.
#include "apps/tidal/engine_setup.h"

#include <cstdlib>

#include "common/logging.h"
#include "elastic/rank_group.h"
#include "elastic/rank_secret.h"
#include "engine/engine_loop.h"
#include "model/load_model.h"

namespace tidal::cli {

void add_engine_setup_options(CLI::App& command, EngineSetup& setup) {
  EngineOptions& engine = setup.engine;
  // A server batches as many requests as vLLM's does by default (256), so that the default
  // serves at the engine's decode rate; the engine's own default stays small for embedding.
  engine.scheduler.max_num_seqs = kServeMaxNumSeqs;
  engine.scheduler.max_num_batched_tokens = kServeMaxNumBatchedTokens;
  command.add_option("--device", setup.device, "cpu, cuda or cuda:N");
  command.add_option("--ranks,--data-parallel-size", setup.ranks,
                     "ranks (processes): attention data-parallel, experts expert-parallel");
  command.add_option("--expert-slots", setup.expert_slots,
                     "expert slots per rank and MoE layer (default: ceil((experts + "
                     "--num-redundant-experts) / ranks))");
  command.add_option("--num-redundant-experts", setup.num_redundant_experts,
                     "spare expert slots over all ranks for replicas of hot experts, when "
                     "--expert-slots is not given");
  command.add_flag("--enable-eplb", setup.enable_eplb,
                   "expert load balancing: re-place experts across ranks for the measured load");
  command.add_option("--eplb-window", setup.eplb_window,
                     "steps of expert load the balancer plans from");
  command.add_option("--eplb-interval", setup.eplb_interval, "steps between rebalances");
  command.add_option("--eplb-layers-per-step", setup.eplb_layers_per_step,
                     "MoE layers whose experts move per step during a rebalance, so no pause is "
                     "long (0: every layer in one pause)");
  command.add_flag("--enable-elastic-ep,--elastic", setup.elastic,
                   "serve through rank processes even at one rank, so that POST /v1/admin/scale "
                   "can change their number (several --ranks imply it)");
  command.add_option("--max-ranks", setup.max_ranks,
                     "the most ranks a scale may reach (default: the GPUs of this host for cuda, "
                     "max(--ranks, 8) for cpu)");
  command.add_option("--scale-prepare-timeout", setup.scale_prepare_timeout_s,
                     "seconds a scale's prepare may take before it rolls back");
  command
      .add_option("--scale-spawn", setup.scale_spawn,
                  "local: a scale-up starts its ranks here; external: it waits for ranks "
                  "started with `tidal rank --coordinator ADDRESS` (other hosts, a scheduler); "
                  "GET /v1/admin/topology gives the address")
      ->check(CLI::IsMember({"local", "external"}));
  command
      .add_option("--rank-timeout", setup.rank_timeout_s,
                  "seconds without a heartbeat after which a rank (stopped, hung, unreachable) is "
                  "declared failed, killed and recovered from")
      ->check(CLI::PositiveNumber);
  command.add_option(
      "--rank-secret-file", setup.rank_secret_file,
      "the rank secret, which ranks started elsewhere (--scale-spawn external, --local-ranks) "
      "must give to join (`tidal rank --rank-secret-file PATH`, or TIDAL_RANK_SECRET): read from "
      "PATH, or a new one written there (mode 0600) when PATH does not exist. Without it, "
      "TIDAL_RANK_SECRET is the secret; ranks this server starts are always given it");
  command
      .add_option("--on-rank-failure", setup.on_rank_failure,
                  "after recovering from a lost rank: shrink (serve with the survivors) or "
                  "replace (then scale back up to the size asked for)")
      ->check(CLI::IsMember({"shrink", "replace"}));
  command
      .add_option("--load-format", setup.load_format,
                  "auto: the model directory's checkpoint; dummy: random weights of --config's "
                  "shapes (the model directory then only gives the tokenizer)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  command.add_option("--config", setup.dummy.config_file,
                     "config.json of the model --load-format dummy makes");
  command.add_option("--num-layers", setup.dummy.num_layers,
                     "--load-format dummy: this many of the config's layers (0: all)");
  command.add_option("--local-ranks", setup.local_ranks,
                     "ranks this process starts (default: all); the others join with "
                     "`tidal rank --coordinator ...`");
  command.add_option("--coordinator-host", setup.coordinator_host,
                     "address the coordinator binds (ranks on other hosts connect to it)");
  command.add_option("--coordinator-port", setup.coordinator_port,
                     "port of the coordinator's control socket (default: any free one)");
  command
      .add_option("--max-num-seqs", engine.scheduler.max_num_seqs,
                  "requests per step and rank at most")
      ->capture_default_str();
  command
      .add_option("--max-num-batched-tokens", engine.scheduler.max_num_batched_tokens,
                  "tokens per step and rank at most (the prefill chunk size)")
      ->capture_default_str();
  command.add_option(
      "--max-admission-delay-steps", engine.scheduler.max_admission_delay_steps,
      "steps a new request may wait so that arrivals into a running batch are prefilled "
      "together, in fewer of the steps that cannot replay a decode graph (default: 8 with CUDA "
      "graphs, else 0; 0 admits at once)");
  command.add_option("--max-model-len", engine.max_model_len,
                     "prompt + output tokens at most (default: the model's, within the KV cache)");
  command.add_option("--block-size", engine.block_size, "tokens per KV cache block");
  command.add_option("--num-kv-blocks", engine.num_kv_blocks,
                     "KV cache blocks per rank (overrides the sizes below)");
  // Sizes take units: 512MiB, 4GiB, 1GB (= 10^9) or plain bytes.
  command
      .add_option("--kv-cache-memory", engine.kv_cache_bytes,
                  "KV cache bytes per rank (overrides --gpu-memory-utilization and "
                  "--cpu-kvcache-space)")
      ->transform(CLI::AsSizeValue(true));
  command
      .add_option("--gpu-memory-utilization", engine.gpu_memory_utilization,
                  "share of each GPU a rank may use in all; its KV cache gets what the weights, "
                  "the worst-case step and the graphs leave of it")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  command
      .add_option("--cpu-kvcache-space", engine.cpu_kvcache_space,
                  "KV cache bytes per CPU rank (vLLM's VLLM_CPU_KVCACHE_SPACE); 0: what "
                  "--gpu-memory-utilization of the host's memory leaves, as on a GPU")
      ->transform(CLI::AsSizeValue(true))
      ->default_str("512MiB");
  command.add_flag(
      "--enforce-eager", [&engine](int64_t) { engine.decode_graphs.enabled = false; },
      "launch every step's kernels one by one: no CUDA graphs for decode");
  command
      .add_option("--max-seq-len-to-capture", engine.decode_graphs.max_context,
                  "the longest sequence a decode CUDA graph covers; longer ones run eagerly")
      ->check(CLI::PositiveNumber);
}

RunningEngine start_engine(const EngineSetup& setup, const std::string& model_directory,
                           const Tokenizer& tokenizer) {
  const std::optional<DummyModelOptions> dummy =
      setup.load_format == "dummy" ? std::optional(setup.dummy) : std::nullopt;
  TIDAL_CHECK(dummy.has_value() == !setup.dummy.config_file.empty(),
              dummy ? "--load-format dummy needs --config FILE"
                    : "--config and --num-layers go with --load-format dummy");
  RunningEngine running;
  if (setup.ranks == 1 && setup.expert_slots == 0 && setup.local_ranks < 0 &&
      setup.num_redundant_experts == 0 && !setup.enable_eplb && !setup.elastic) {
    running.backend = make_backend(setup.device);
    running.model = load_model(model_directory, dummy, *running.backend);
    running.engine =
        std::make_unique<Engine>(*running.backend, *running.model, tokenizer, setup.engine);
    running.engine->warm_up();
    running.client = std::make_unique<EngineLoop>(*running.engine);
    return running;
  }
  // Ranks of ours hear the secret from us; ranks started elsewhere must be given it.
  const bool external_ranks = setup.scale_spawn == "external" ||
                              (setup.local_ranks >= 0 && setup.local_ranks < setup.ranks);
  const Result<FrontRankSecret> secret =
      front_rank_secret(setup.rank_secret_file, std::getenv(kRankSecretEnv), external_ranks);
  if (!secret.is_ok()) TIDAL_FAIL(secret.status().message());
  if (external_ranks) {
    log_info("rank secret ", secret.value().where, ": ranks started elsewhere join with it ",
             "(`tidal rank --rank-secret-file PATH` or ", kRankSecretEnv, ")");
  } else {
    log_info("rank secret ", secret.value().where);
  }
  running.client = std::make_unique<RankGroup>(RankGroupOptions{
      .model_directory = model_directory,
      .device = setup.device,
      .num_ranks = setup.ranks,
      .slots_per_rank = setup.expert_slots,
      .num_redundant_experts = setup.num_redundant_experts,
      .max_num_ranks = setup.max_ranks,
      .num_local_ranks = setup.local_ranks,
      .spawn_joining_ranks = setup.scale_spawn == "local",
      .bind_host = setup.coordinator_host,
      .control_port = setup.coordinator_port,
      .engine = setup.engine,
      .prepare_timeout = std::chrono::seconds(setup.scale_prepare_timeout_s),
      .dummy = dummy,
      .enable_eplb = setup.enable_eplb,
      .eplb_window = setup.eplb_window,
      .eplb_interval = setup.eplb_interval,
      .eplb_layers_per_step = setup.eplb_layers_per_step,
      .rank_timeout = std::chrono::milliseconds(static_cast<int64_t>(setup.rank_timeout_s * 1000)),
      .on_rank_failure =
          setup.on_rank_failure == "shrink" ? OnRankFailure::kShrink : OnRankFailure::kReplace,
      .rank_secret = secret.value().secret});
  return running;
}

}  // namespace tidal::cli
