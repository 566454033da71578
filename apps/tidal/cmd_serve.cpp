// `tidal serve`: load a model, warm the engine up, and serve the OpenAI-compatible API until
// SIGINT or SIGTERM.
#include <signal.h>

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "apps/tidal/commands.h"
#include "backend/backend.h"
#include "common/logging.h"
#include "elastic/rank_group.h"
#include "engine/engine.h"
#include "engine/engine_loop.h"
#include "model/load_model.h"
#include "server/api_server.h"

namespace tidal::cli {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;
  int ranks = 1;
  int expert_slots = 0;
  int local_ranks = -1;
  std::string coordinator_host = "127.0.0.1";
  int coordinator_port = 0;
  std::string device = "cpu";
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 512;
  int64_t max_model_len = 0;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;
  size_t kv_cache_bytes = size_t{256} << 20;
  size_t max_request_bytes = size_t{8} << 20;
  int http_threads = 256;
  std::string generation_config = "auto";
};

int run_serve(const ServeOptions& options) {
  // Signals go to one waiting thread, not to whichever thread happens to run.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server

  const bool bundled = options.model.empty();
  const std::string model_dir = bundled ? default_model_directory() : options.model;
  const Tokenizer tokenizer = Tokenizer::from_file(model_dir);
  std::optional<ChatTemplate> chat_template;
  try {
    chat_template = ChatTemplate::from_model_dir(model_dir);
  } catch (const Error& error) {
    log_warning("no chat template, /v1/chat/completions will refuse requests: ", error.what());
  }

  // One rank runs in this process; more are rank processes behind a RankGroup.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Qwen3MoeModel> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EngineClient> client;
  if (options.ranks == 1 && options.expert_slots == 0) {
    backend = make_backend(options.device);
    model = load_model(model_dir, *backend);
    EngineOptions engine_options;
    engine_options.scheduler = {.max_num_seqs = options.max_num_seqs,
                                .max_num_batched_tokens = options.max_num_batched_tokens};
    engine_options.block_size = options.block_size;
    engine_options.num_kv_blocks = options.num_kv_blocks;
    engine_options.kv_cache_bytes = options.kv_cache_bytes;
    engine_options.max_model_len = options.max_model_len;
    engine = std::make_unique<Engine>(*backend, *model, tokenizer, engine_options);
    engine->warm_up();
    client = std::make_unique<EngineLoop>(*engine);
  } else {
    client = std::make_unique<RankGroup>(
        RankGroupOptions{.model_directory = model_dir,
                         .device = options.device,
                         .num_ranks = options.ranks,
                         .slots_per_rank = options.expert_slots,
                         .num_local_ranks = options.local_ranks,
                         .bind_host = options.coordinator_host,
                         .control_port = options.coordinator_port,
                         .max_num_seqs = options.max_num_seqs,
                         .max_num_batched_tokens = options.max_num_batched_tokens,
                         .block_size = options.block_size,
                         .num_kv_blocks = options.num_kv_blocks,
                         .kv_cache_bytes = options.kv_cache_bytes,
                         .max_model_len = options.max_model_len});
  }

  ServingContext context{
      .model_name = !options.served_model_name.empty() ? options.served_model_name
                    : bundled                          ? std::string("tiny-qwen3-moe")
                                                       : options.model,
      .model_directory = model_dir,
      .tokenizer = &tokenizer,
      .chat_template = chat_template ? &*chat_template : nullptr,
      .engine = client.get(),
      .defaults = options.generation_config == "auto" ? SamplingDefaults::from_model_dir(model_dir)
                                                      : SamplingDefaults{}};
  if (context.defaults.temperature || context.defaults.top_p || context.defaults.top_k) {
    log_info("sampling defaults from generation_config.json: temperature=",
             context.defaults.temperature.value_or(1.0f),
             " top_p=", context.defaults.top_p.value_or(1.0f),
             " top_k=", context.defaults.top_k.value_or(0),
             " (requests override them; --generation-config none ignores them)");
  }
  ApiServer server(context, {.host = options.host,
                             .port = options.port,
                             .max_request_bytes = options.max_request_bytes,
                             .http_threads = options.http_threads});
  std::thread signal_waiter([&] {
    int received = 0;
    sigwait(&signals, &received);
    log_info("signal ", received, ": shutting down");
    server.stop();
  });
  try {
    server.serve([&](int port) {
      log_info("serving '", context.model_name, "' at http://", options.host, ":", port,
               " (max_model_len ", client->max_model_len(), ", ", options.ranks, " rank(s) on ",
               options.device, ")");
    });
  } catch (...) {
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
    signal_waiter.join();
    throw;
  }
  // listen returned because stop() ran; make sure the waiter is not left blocked.
  pthread_kill(signal_waiter.native_handle(), SIGTERM);
  signal_waiter.join();
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* command = app.add_subcommand("serve", "Serve the OpenAI-compatible API");
  command->add_option("--model", options->model,
                      "Hugging Face model directory (default: the bundled tiny model)");
  command->add_option("--host", options->host, "address to listen on");
  command->add_option("--port", options->port, "port to listen on (0: any free port)");
  command->add_option("--served-model-name", options->served_model_name,
                      "the model name clients use (default: --model as given)");
  command->add_option("--ranks,--data-parallel-size", options->ranks,
                      "ranks (processes): attention data-parallel, experts expert-parallel");
  command->add_option("--expert-slots", options->expert_slots,
                      "expert slots per rank and MoE layer (default: ceil(experts / ranks))");
  command->add_option("--local-ranks", options->local_ranks,
                      "ranks this process starts (default: all); the others join with "
                      "`tidal rank --coordinator ...`");
  command->add_option("--coordinator-host", options->coordinator_host,
                      "address the coordinator binds (ranks on other hosts connect to it)");
  command->add_option("--coordinator-port", options->coordinator_port,
                      "port of the coordinator's control socket (default: any free one)");
  command->add_option("--device", options->device, "cpu, cuda or cuda:N");
  command->add_option("--max-num-seqs", options->max_num_seqs, "requests per step at most");
  command->add_option("--max-num-batched-tokens", options->max_num_batched_tokens,
                      "tokens per step at most (prefill chunk size)");
  command->add_option("--max-model-len", options->max_model_len,
                      "prompt + output tokens at most (default: the model's, within the KV cache)");
  command->add_option("--block-size", options->block_size, "tokens per KV cache block");
  command->add_option("--num-kv-blocks", options->num_kv_blocks, "KV cache blocks");
  command->add_option("--kv-cache-memory", options->kv_cache_bytes,
                      "bytes of KV cache when --num-kv-blocks is not given");
  command->add_option("--max-request-bytes", options->max_request_bytes,
                      "largest request body accepted");
  command->add_option("--http-threads", options->http_threads,
                      "HTTP worker threads (each open stream holds one)");
  command
      ->add_option("--generation-config", options->generation_config,
                   "auto: sampling defaults from generation_config.json; none: OpenAI's")
      ->check(CLI::IsMember({"auto", "none"}));
  return [options]() { return run_serve(*options); };
}

}  // namespace tidal::cli
