// `tidal serve`: load a model, warm the engine up, and serve the OpenAI-compatible API until
// SIGINT or SIGTERM.
#include <signal.h>

#include <cstdlib>
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
  HttpLimits limits;
  double read_timeout_s = 30;
  double keep_alive_timeout_s = 5;
  int http_threads = 2;
  int http_workers = 4;
  int64_t max_queued_requests = 4096;
  AccessOptions access;
  RequestLimits request_limits;
  std::string generation_config = "auto";
  std::string chat_template_file;  // replaces the model's template when given
  std::string reasoning_parser;    // "", qwen3 or deepseek_r1
  std::string tool_call_parser;    // "" or hermes
  bool trust_request_chat_template = false;
  EngineSetup setup;
};

// A flag's value, else the environment variable's (keys stay out of `ps` that way).
std::string flag_or_env(const std::string& flag, const char* variable) {
  if (!flag.empty()) return flag;
  const char* value = std::getenv(variable);
  return value != nullptr ? value : "";
}

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
  if (!options.chat_template_file.empty()) {
    // Asked for by name: a file that is missing or does not parse stops the server.
    chat_template = ChatTemplate::from_model_dir(model_dir, options.chat_template_file);
    log_info("chat template from ", options.chat_template_file);
  } else {
    try {
      chat_template = ChatTemplate::from_model_dir(model_dir);
    } catch (const Error& error) {
      log_warning(
          "no chat template, /v1/chat/completions refuses requests without their own "
          "chat_template: ",
          error.what());
    }
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
      .kv_block_size = options.setup.engine.block_size,
      .max_num_seqs = options.setup.engine.scheduler.max_num_seqs,
      .reasoning = reasoning_syntax_named(options.reasoning_parser),
      .parse_tool_calls = options.tool_call_parser == "hermes",
      .trust_request_chat_template = options.trust_request_chat_template,
      .adjusted_sampling = options.setup.device == "cpu"};
  if (context.defaults.temperature || context.defaults.top_p || context.defaults.top_k) {
    log_info("sampling defaults from generation_config.json: temperature=",
             context.defaults.temperature.value_or(1.0f),
             " top_p=", context.defaults.top_p.value_or(1.0f),
             " top_k=", context.defaults.top_k.value_or(0),
             " (requests override them; --generation-config none ignores them)");
  }
  HttpLimits limits = options.limits;
  limits.read_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.read_timeout_s * 1e3));
  limits.keep_alive_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.keep_alive_timeout_s * 1e3));
  AccessOptions access = options.access;
  access.api_key = flag_or_env(access.api_key, "TIDAL_API_KEY");
  access.admin_api_key = flag_or_env(access.admin_api_key, "TIDAL_ADMIN_API_KEY");
  TIDAL_CHECK(!access.metrics_need_key || !access.api_key.empty() || !access.admin_api_key.empty(),
              "--metrics-need-key needs --api-key or --admin-api-key (or TIDAL_API_KEY)");
  log_info("access: /v1 ", access.api_key.empty() ? "open" : "needs the API key", ", admin routes ",
           access.admin_api_key.empty() ? "loopback clients only" : "need the admin key",
           ", /metrics ", access.metrics_need_key ? "needs a key" : "open", ", CORS ",
           access.allowed_origins.empty() ? "off" : "on");
  ApiServer server(context, {.http = {.host = options.host,
                                      .port = options.port,
                                      .io_threads = options.http_threads,
                                      .worker_threads = options.http_workers,
                                      .limits = limits},
                             .access = access,
                             .request_limits = options.request_limits,
                             .max_queued_requests = options.max_queued_requests});
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
  HttpLimits& limits = options->limits;
  command
      ->add_option("--max-request-bytes", limits.max_body_bytes,
                   "largest request body accepted (after chunked and gzip/deflate decoding)")
      ->capture_default_str();
  command
      ->add_option("--max-header-bytes", limits.max_header_bytes,
                   "largest request line and headers together")
      ->capture_default_str();
  command->add_option("--max-headers", limits.max_headers, "most header fields in a request")
      ->capture_default_str();
  command
      ->add_option("--max-request-line", limits.max_request_line,
                   "longest request line (method, target, version)")
      ->capture_default_str();
  command
      ->add_option("--http-read-timeout", options->read_timeout_s,
                   "seconds a request may take to arrive whole once it has started")
      ->capture_default_str();
  command
      ->add_option("--http-keep-alive-timeout", options->keep_alive_timeout_s,
                   "seconds an idle kept-alive connection stays open")
      ->capture_default_str();
  command
      ->add_option("--max-connections", limits.max_connections,
                   "open connections; one more gets 503 and is closed")
      ->capture_default_str();
  command
      ->add_option("--max-queued-requests", options->max_queued_requests,
                   "requests waiting beyond what the ranks run at once; more get 503 with "
                   "Retry-After")
      ->capture_default_str();
  command
      ->add_option("--http-threads", options->http_threads,
                   "I/O threads serving every connection (event-driven)")
      ->capture_default_str();
  command
      ->add_option("--http-workers", options->http_workers,
                   "threads parsing, templating and tokenizing requests")
      ->capture_default_str();
  RequestLimits& requests = options->request_limits;
  command
      ->add_option("--max-json-depth", requests.max_json_depth,
                   "deepest nesting of arrays and objects in a request body")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000));
  command->add_option("--max-stop", requests.max_stop, "most stop strings in a request")
      ->capture_default_str();
  command->add_option("--max-stop-bytes", requests.max_stop_bytes, "longest stop string, in bytes")
      ->capture_default_str();
  command
      ->add_option("--max-choices", requests.max_choices,
                   "most choices in a request (n, times the prompts of a completion)")
      ->capture_default_str();
  command->add_option("--api-key", options->access.api_key,
                      "clients of /v1/* must send 'Authorization: Bearer <key>' (default: "
                      "$TIDAL_API_KEY; none: open)");
  command->add_option("--admin-api-key", options->access.admin_api_key,
                      "the key of the admin routes (default: $TIDAL_ADMIN_API_KEY; none: they "
                      "serve loopback clients only)");
  command->add_flag("--metrics-need-key", options->access.metrics_need_key,
                    "/metrics needs the API or the admin key");
  command
      ->add_option("--allowed-origins", options->access.allowed_origins,
                   "CORS: origins browsers may call from ('*' for any; default: none)")
      ->delimiter(',');
  command
      ->add_option("--generation-config", options->generation_config,
                   "auto: sampling defaults from generation_config.json; none: OpenAI's")
      ->check(CLI::IsMember({"auto", "none"}));
  command->add_option("--chat-template", options->chat_template_file,
                      "a Jinja file that replaces the model's chat template");
  command->add_flag("--trust-request-chat-template", options->trust_request_chat_template,
                    "render a request's own chat_template (a template is a program: only for "
                    "clients you trust)");
  command
      ->add_option("--reasoning-parser", options->reasoning_parser,
                   "separate chat answers' <think> block into reasoning_content")
      ->check(CLI::IsMember({"qwen3", "deepseek_r1"}));
  command
      ->add_option("--tool-call-parser", options->tool_call_parser,
                   "parse <tool_call> blocks (Qwen2.5/Qwen3's Hermes format) into tool_calls for "
                   "requests with tools and tool_choice \"auto\"")
      ->check(CLI::IsMember({"hermes"}));
  return [options]() { return run_serve(*options); };
}

}  // namespace tidal::cli
