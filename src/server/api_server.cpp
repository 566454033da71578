// ApiServer: routing, the completion and chat handlers, SSE streaming, and error bodies.
#include "server/api_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>
#include <memory>

#include "common/logging.h"
#include "server/admin_routes.h"
#include "server/generation.h"
#include "server/http_json.h"
#include "server/response_format.h"

namespace tidal {
namespace {

constexpr auto kStreamPoll = std::chrono::milliseconds(500);

bool is_known_route(const std::string& path) {
  static const char* kRoutes[] = {"/v1/completions",
                                  "/v1/chat/completions",
                                  "/v1/models",
                                  "/health",
                                  "/metrics",
                                  "/v1/admin/scale",
                                  "/v1/admin/topology",
                                  "/scale_elastic_ep",
                                  "/is_scaling_elastic_ep"};
  for (const char* route : kRoutes) {
    if (path == route) return true;
  }
  return false;
}

}  // namespace

ApiServer::ApiServer(ServingContext context, ApiServerOptions options)
    : context_(std::move(context)), options_(options), http_(std::make_unique<httplib::Server>()) {
  const int threads = options_.http_threads;
  http_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  http_->set_payload_max_length(options_.max_request_bytes);
  register_routes();
}

ApiServer::~ApiServer() = default;

void ApiServer::serve(const std::function<void(int port)>& on_listening) {
  // httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into the shared
  // library): a burst of clients connecting at once overflows it, and the kernel's SYN-cookie
  // fallback then resets some of their connections. Note the listening socket as httplib makes
  // it, and raise its backlog once bound (listen() again on Linux only changes the backlog).
  auto listener = std::make_shared<int>(-1);
  http_->set_socket_options([listener](socket_t sock) {
    httplib::default_socket_options(sock);
    *listener = sock;
  });
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
    if (port < 0) TIDAL_FAIL("cannot bind ", options_.host, " on any port");
  } else if (!http_->bind_to_port(options_.host, port)) {
    TIDAL_FAIL("cannot bind ", options_.host, ":", port,
               " (in use, or not an address of this host)");
  }
  int accepting = 0;
  socklen_t size = sizeof(accepting);
  if (*listener >= 0 && getsockopt(*listener, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) == 0 &&
      accepting != 0 && ::listen(*listener, SOMAXCONN) != 0) {
    log_warning("could not raise the listen backlog; bursts of connections may be reset");
  }
  if (on_listening) on_listening(port);
  http_->listen_after_bind();
}

void ApiServer::stop() {
  http_->stop();
}

void ApiServer::register_routes() {
  httplib::Server& http = *http_;

  http.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    metrics_.count_response(res.status);
  });

  // Unknown routes, wrong methods and oversized bodies still get an OpenAI-style body. httplib
  // calls this for every status >= 400, also after a route wrote its own error: that body (with
  // its param and code) must stand, or every 400 reads "HTTP 400" and a 404 of an unknown model
  // on a known route turns into a 405.
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError error;
        if (res.status == 404 && is_known_route(req.path)) {
          error = {.status = 405,
                   .type = "invalid_request_error",
                   .message = cat("method ", req.method, " is not allowed on ", req.path),
                   .param = "",
                   .code = "method_not_allowed"};
        } else if (res.status == 404) {
          error = {.status = 404,
                   .type = "invalid_request_error",
                   .message = cat("no route ", req.method, " ", req.path),
                   .param = "",
                   .code = "not_found"};
        } else if (res.status == 413) {
          error = {.status = 413,
                   .type = "invalid_request_error",
                   .message = "the request body is larger than the server accepts",
                   .param = "",
                   .code = "request_too_large"};
        } else {
          error = {.status = res.status,
                   .type = "invalid_request_error",
                   .message = cat("HTTP ", res.status),
                   .param = "",
                   .code = ""};
        }
        send_error(res, error);
        return httplib::Server::HandlerResponse::Handled;
      }));

  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr failure) {
        std::string message = "internal error";
        try {
          if (failure) std::rethrow_exception(failure);
        } catch (const std::exception& error) {
          message = error.what();
        } catch (...) {
        }
        log_line(LogLevel::kError, cat("request failed: ", message));
        send_error(res, {.status = 500,
                         .type = "server_error",
                         .message = message,
                         .param = "",
                         .code = "internal_error"});
      });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    // 503 while the engine cannot take a request (recovering from a rank failure, or failed).
    res.status = context_.engine->can_serve() ? 200 : 503;
    res.set_content("", "text/plain");
  });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const ScaleControl* scaling = context_.engine->scale_control();
    res.set_content(metrics_.render(context_.engine->loads(),
                                    scaling ? std::optional(scaling->scale_stats()) : std::nullopt,
                                    {.block_size = context_.kv_block_size,
                                     .max_model_len = context_.engine->max_model_len()}),
                    "text/plain; version=0.0.4; charset=utf-8");
  });

  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data",
                {{{"id", context_.model_name},
                  {"object", "model"},
                  {"created", static_cast<int64_t>(std::time(nullptr))},
                  {"owned_by", "tidal"},
                  {"root", context_.model_directory},
                  {"max_model_len", context_.engine->max_model_len()}}}}});
  });

  // Both generation endpoints: parse, check the model, build prompts, then respond.
  auto generate = [this](const httplib::Request& req, httplib::Response& res, bool chat) {
    std::variant<CompletionRequest, ApiError> completion;
    std::variant<ChatRequest, ApiError> chat_request;
    const GenerationRequest* request = nullptr;
    std::vector<std::vector<int32_t>> prompts;
    if (chat) {
      chat_request = parse_chat_request(req.body, context_.defaults);
      if (auto* error = std::get_if<ApiError>(&chat_request)) return send_error(res, *error);
      request = &std::get<ChatRequest>(chat_request);
    } else {
      completion = parse_completion_request(req.body, context_.defaults);
      if (auto* error = std::get_if<ApiError>(&completion)) return send_error(res, *error);
      request = &std::get<CompletionRequest>(completion);
    }
    if (request->model != context_.model_name) {
      return send_error(res, {.status = 404,
                              .type = "invalid_request_error",
                              .message = cat("The model '", request->model, "' does not exist"),
                              .param = "model",
                              .code = "model_not_found"});
    }
    if (chat) {
      const ChatRequest& parsed = std::get<ChatRequest>(chat_request);
      if (context_.chat_template == nullptr) {
        return send_error(
            res, ApiError::bad_request("this model has no chat template; use /v1/completions"));
      }
      std::string rendered;
      try {
        rendered = context_.chat_template->render(parsed.messages, parsed.add_generation_prompt,
                                                  parsed.template_kwargs);
      } catch (const Error& error) {
        return send_error(res, ApiError::bad_request(
                                   cat("the chat template failed: ", error.what()), "messages"));
      }
      prompts.push_back(context_.tokenizer->encode(rendered));
    } else {
      const CompletionRequest& parsed = std::get<CompletionRequest>(completion);
      for (const Prompt& prompt : parsed.prompts) {
        if (const auto* text = std::get_if<std::string>(&prompt)) {
          prompts.push_back(context_.tokenizer->encode(*text));
        } else {
          prompts.push_back(std::get<std::vector<int32_t>>(prompt));
        }
      }
    }

    const std::string id = cat(chat ? "chatcmpl-" : "cmpl-", std::hex, ++next_request_id_, std::dec,
                               "-", std::time(nullptr));
    auto started = Generation::start(*context_.engine, metrics_, *request, prompts, id);
    if (auto* error = std::get_if<ApiError>(&started)) return send_error(res, *error);
    std::shared_ptr<Generation> generation =
        std::move(std::get<std::unique_ptr<Generation>>(started));
    const ResponseFormat format{.chat = chat,
                                .model = context_.model_name,
                                .tokenizer = context_.tokenizer,
                                .return_token_ids = request->return_token_ids,
                                .logprobs = request->params.logprobs.has_value()};

    if (!request->stream) {
      while (!generation->finished()) generation->next(kStreamPoll);
      if (!generation->server_error().empty()) {
        // Never a truncated 200: the client learns the request failed, and why.
        return send_error(res, {.status = 503,
                                .type = "server_error",
                                .message = generation->server_error(),
                                .param = "",
                                .code = "unavailable"});
      }
      return send_json(res, 200, format.full_response(*generation));
    }

    const bool include_usage = request->include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [generation, format, include_usage](size_t, httplib::DataSink& sink) {
          auto write_event = [&](const std::string& data) {
            const std::string event = "data: " + data + "\n\n";
            return sink.write(event.data(), event.size());
          };
          std::vector<bool> started_choices(generation->choices().size(), false);
          while (!generation->finished()) {
            std::optional<Generation::Update> update = generation->next(kStreamPoll);
            bool written = true;
            if (!update) {
              // An SSE comment: clients ignore it, and a closed connection shows up here.
              static constexpr char kKeepAlive[] = ": keep-alive\n\n";
              written = sink.write(kKeepAlive, sizeof(kKeepAlive) - 1);
            } else {
              for (const nlohmann::json& chunk :
                   format.stream_chunks(*generation, *update, started_choices, include_usage)) {
                written = written && write_event(chunk.dump(
                                         -1, ' ', false, nlohmann::json::error_handler_t::replace));
              }
            }
            if (!written) {
              generation->abort();  // the client is gone: free its slots and KV blocks now
              return false;
            }
          }
          if (!generation->server_error().empty()) {
            // The stream did not end normally: say so before [DONE] (no finish_reason came).
            const nlohmann::json error = {{"error",
                                           {{"message", generation->server_error()},
                                            {"type", "server_error"},
                                            {"param", nullptr},
                                            {"code", 503}}}};
            if (!write_event(error.dump())) return false;
          }
          if (include_usage && !write_event(format.usage_chunk(*generation).dump())) return false;
          if (!write_event("[DONE]")) return false;
          sink.done();
          return true;
        },
        [generation](bool) { generation->abort(); });
  };

  http.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, false);
  });
  http.Post("/v1/chat/completions",
            [generate](const httplib::Request& req, httplib::Response& res) {
              generate(req, res, true);
            });
  register_admin_routes(http, *context_.engine);
}

}  // namespace tidal
