// The engine behind `generate` and `serve`: one rank in this process, or rank processes behind a
// RankGroup; the options both commands share, and the code that starts either.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"
#include "engine/engine.h"
#include "engine/engine_client.h"
#include "model/causal_lm.h"
#include "model/dummy_weights.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal::cli {

// --max-num-seqs of generate and serve by default.
inline constexpr int64_t kServeMaxNumSeqs = 256;
// vLLM's default for its API server. With 256 sequences decoding, 512 left room for 4 prompts of
// 64 tokens per step, so arrivals kept most steps mixed (eager); 2048 lets the scheduler admit
// the arrivals of several steps in one.
inline constexpr int64_t kServeMaxNumBatchedTokens = 2048;

struct EngineSetup {
  std::string device = "cpu";
  int ranks = 1;
  int expert_slots = 0;  // 0: ceil((experts + num_redundant_experts) / ranks)
  int num_redundant_experts = 0;
  bool enable_eplb = false;
  int eplb_window = 1000;
  int eplb_interval = 3000;
  int eplb_layers_per_step = 0;
  int local_ranks = -1;  // -1: this process starts every rank
  bool elastic = false;  // serve through rank processes even at one rank, so it can scale
  int max_ranks = 0;     // 0: the GPUs of this host (cuda), max(ranks, 8) (cpu)
  int scale_prepare_timeout_s = 120;
  std::string scale_spawn = "local";        // who starts a scale-up's ranks: local or external
  double rank_timeout_s = 5;                // a rank silent this long is declared failed
  std::string on_rank_failure = "replace";  // shrink, or replace the lost ranks
  // Where the rank secret is kept for ranks started elsewhere (see elastic/rank_secret.h).
  std::string rank_secret_file = {};
  // --load-format dummy: random weights of --config's shapes (benchmarks at real model sizes);
  // the model directory then only provides the tokenizer.
  std::string load_format = "auto";
  DummyModelOptions dummy;
  std::string coordinator_host = "127.0.0.1";
  int coordinator_port = 0;
  EngineOptions engine;  // scheduler and KV cache sizing, per rank
};

// Registers --device, --ranks/--data-parallel-size, --expert-slots, --local-ranks,
// --coordinator-host/-port, --max-num-seqs, --max-num-batched-tokens, --max-model-len,
// --block-size, --num-kv-blocks, --kv-cache-memory, --gpu-memory-utilization,
// --cpu-kvcache-space, --num-redundant-experts, --enable-eplb,
// --eplb-window, --eplb-interval, --enable-elastic-ep, --max-ranks, --scale-prepare-timeout,
// --scale-spawn, --rank-timeout, --on-rank-failure, --rank-secret-file, --load-format, --config
// and --num-layers.
void add_engine_setup_options(CLI::App& command, EngineSetup& setup);

// Members are destroyed in reverse order: the client (which may own a thread or rank processes)
// goes before the engine and model it drives.
struct RunningEngine {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<CausalLm> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EngineClient> client;
};

// Loads, warms up and returns the engine; with several ranks, returns once all of them are ready.
RunningEngine start_engine(const EngineSetup& setup, const std::string& model_directory,
                           const Tokenizer& tokenizer);

}  // namespace tidal::cli
