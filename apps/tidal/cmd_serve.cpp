// `tidal serve`: load a model, warm the engine up, and serve the OpenAI-compatible API until
// SIGINT or SIGTERM.
#include <signal.h>

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "apps/tidal/commands.h"
#include "apps/tidal/engine_setup.h"
#include "backend/backend.h"
#include "common/logging.h"
#include "engine/engine.h"
#include "model/load_model.h"
#include "server/api_server.h"

namespace tidal::cli {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;
  size_t max_request_bytes = size_t{8} << 20;
  int http_threads = 256;
  std::string generation_config = "auto";
  EngineSetup setup;
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

  RunningEngine running = start_engine(options.setup, model_dir, tokenizer);
  EngineClient* client = running.client.get();

  ServingContext context{
      .model_name = !options.served_model_name.empty() ? options.served_model_name
                    : bundled                          ? std::string("tiny-qwen3-moe")
                                                       : options.model,
      .model_directory = model_dir,
      .tokenizer = &tokenizer,
      .chat_template = chat_template ? &*chat_template : nullptr,
      .engine = client,
      .defaults = options.generation_config == "auto" ? SamplingDefaults::from_model_dir(model_dir)
                                                      : SamplingDefaults{},
      .kv_block_size = options.setup.engine.block_size};
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
               " (max_model_len ", client->max_model_len(), ", ", options.setup.ranks,
               " rank(s) on ", options.setup.device, ")");
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
  add_engine_setup_options(*command, options->setup);
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
