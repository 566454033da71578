// ApiServer: the routes, admission, the completion and chat handlers, and error bodies.
#include "server/api_server.h"

#include <algorithm>
#include <ctime>
#include <memory>

#include "common/logging.h"
#include "engine/structured_output.h"
#include "server/admin_routes.h"
#include "server/generation.h"
#include "server/generation_response.h"
#include "server/http_json.h"
#include "server/response_format.h"

namespace tidal {
namespace {

std::string error_code_of(int status) {
  switch (status) {
    case 400:
      return "bad_request";
    case 408:
      return "request_timeout";
    case 413:
      return "request_too_large";
    case 414:
      return "request_line_too_long";
    case 415:
      return "unsupported_media_type";
    case 431:
      return "headers_too_large";
    case 503:
      return "unavailable";
    default:
      return status >= 500 ? "internal_error" : "";
  }
}

}  // namespace

ApiServer::ApiServer(ServingContext context, ApiServerOptions options)
    : context_(std::move(context)), options_(std::move(options)) {
  http_ = std::make_unique<HttpServer>(options_.http, routes(), hooks());
}

ApiServer::~ApiServer() = default;

void ApiServer::serve(const std::function<void(int port)>& on_listening) {
  const int port = http_->bind();
  if (on_listening) on_listening(port);
  http_->serve();
}

void ApiServer::stop() {
  http_->stop();
}

HttpHooks ApiServer::hooks() {
  HttpHooks hooks;
  const AccessOptions access = options_.access;
  hooks.gate = [access](const HttpRequest& request,
                        const HttpRoute* route) -> std::optional<HttpResponse> {
    // Unknown routes answer 404/405 whoever asks; known ones check access first.
    if (route == nullptr && request.method != "OPTIONS") return std::nullopt;
    return check_access(request, access);
  };
  hooks.decorate = [access](const HttpRequest& request, HttpResponse& response) {
    add_cors_headers(request, access, response);
  };
  hooks.count_response = [this](int status) { metrics_.count_response(status); };
  hooks.no_route = [](const HttpRequest& request, bool path_known) {
    if (path_known) {
      return error_response(
          {.status = 405,
           .type = "invalid_request_error",
           .message = cat("method ", request.method, " is not allowed on ", request.path),
           .param = "",
           .code = "method_not_allowed"});
    }
    return error_response({.status = 404,
                           .type = "invalid_request_error",
                           .message = cat("no route ", request.method, " ", request.path),
                           .param = "",
                           .code = "not_found"});
  };
  hooks.refusal = [](int status, const std::string& message) {
    return error_response({.status = status,
                           .type = status >= 500 ? "server_error" : "invalid_request_error",
                           .message = message,
                           .param = "",
                           .code = error_code_of(status)});
  };
  return hooks;
}

std::vector<HttpRoute> ApiServer::routes() {
  std::vector<HttpRoute> routes;
  // Answered on the I/O thread: it must stay instant however many streams are open.
  routes.push_back({.method = "GET",
                    .path = "/health",
                    .prefix = false,
                    .offload = false,
                    .handler = [this](HttpRequest, std::shared_ptr<HttpExchange> exchange) {
                      // 503 while the engine cannot take a request (recovering, or failed).
                      exchange->respond({.status = context_.engine->can_serve() ? 200 : 503,
                                         .content_type = "text/plain",
                                         .body = {}});
                    }});
  routes.push_back(
      {.method = "GET",
       .path = "/metrics",
       .prefix = false,
       .offload = true,
       .handler = [this](HttpRequest, std::shared_ptr<HttpExchange> exchange) {
         const ScaleControl* scaling = context_.engine->scale_control();
         std::string text =
             metrics_.render(context_.engine->loads(),
                             scaling ? std::optional(scaling->scale_stats()) : std::nullopt,
                             {.block_size = context_.kv_block_size,
                              .max_model_len = context_.engine->max_model_len()});
         ServerMetrics::render_front(http_->open_connections(), choices_in_flight_.load(), text);
         exchange->respond({.status = 200,
                            .content_type = "text/plain; version=0.0.4; charset=utf-8",
                            .body = std::move(text)});
       }});
  routes.push_back(
      {.method = "GET",
       .path = "/v1/models",
       .prefix = false,
       .offload = false,
       .handler = [this](HttpRequest, std::shared_ptr<HttpExchange> exchange) {
         exchange->respond(json_response(
             200, {{"object", "list"}, {"data", nlohmann::json::array({model_card()})}}));
       }});
  routes.push_back({.method = "GET",
                    .path = "/v1/models/",
                    .prefix = true,
                    .offload = false,
                    .handler = [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                      const std::string id = request.path.substr(std::string("/v1/models/").size());
                      if (id != context_.model_name) {
                        return exchange->respond(error_response(model_not_found(id)));
                      }
                      exchange->respond(json_response(200, model_card()));
                    }});
  routes.push_back({.method = "GET",
                    .path = "/version",
                    .prefix = false,
                    .offload = false,
                    .handler = [](HttpRequest, std::shared_ptr<HttpExchange> exchange) {
                      exchange->respond(json_response(200, {{"version", TIDAL_VERSION}}));
                    }});
  routes.push_back({.method = "POST",
                    .path = "/tokenize",
                    .prefix = false,
                    .offload = true,
                    .handler = [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                      exchange->respond(tokenize(request.body));
                    }});
  routes.push_back({.method = "POST",
                    .path = "/detokenize",
                    .prefix = false,
                    .offload = true,
                    .handler = [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                      exchange->respond(detokenize(request.body));
                    }});
  // Parsing, templates and tokenizing run on the worker pool; the response is then produced on
  // the connection's I/O strand as outputs arrive.
  routes.push_back({.method = "POST",
                    .path = "/v1/completions",
                    .prefix = false,
                    .offload = true,
                    .handler = [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                      generate(std::move(request), exchange, false);
                    }});
  routes.push_back({.method = "POST",
                    .path = "/v1/chat/completions",
                    .prefix = false,
                    .offload = true,
                    .handler = [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
                      generate(std::move(request), exchange, true);
                    }});
  add_admin_routes(routes, *context_.engine);
  return routes;
}

nlohmann::json ApiServer::model_card() const {
  return {{"id", context_.model_name},
          {"object", "model"},
          {"created", static_cast<int64_t>(std::time(nullptr))},
          {"owned_by", "tidal"},
          {"root", context_.model_directory},
          {"max_model_len", context_.engine->max_model_len()}};
}

ApiError ApiServer::model_not_found(const std::string& model) {
  return {.status = 404,
          .type = "invalid_request_error",
          .message = cat("The model '", model, "' does not exist"),
          .param = "model",
          .code = "model_not_found"};
}

std::variant<std::string, ApiError> ApiServer::render_chat(const ChatInputs& inputs) const {
  std::optional<ChatTemplate> own;
  if (inputs.chat_template && !context_.trust_request_chat_template) {
    // A template is a program: a tiny one can render a prompt far past the body limit.
    return ApiError::bad_request(
        "a request's own chat_template needs the server started with "
        "--trust-request-chat-template",
        "chat_template");
  }
  if (inputs.chat_template) {
    try {
      own = context_.chat_template != nullptr
                ? context_.chat_template->with_source(*inputs.chat_template)
                : ChatTemplate::from_source(*inputs.chat_template, "", "");
    } catch (const Error& error) {
      return ApiError::bad_request(cat("chat_template does not parse: ", error.what()),
                                   "chat_template");
    }
  } else if (context_.chat_template == nullptr) {
    return ApiError::bad_request(
        "this model has no chat template; pass 'chat_template', start the server with "
        "--chat-template FILE, or use /v1/completions");
  }
  const ChatTemplate& chosen = own ? *own : *context_.chat_template;
  try {
    return chosen.render(inputs.messages, inputs.add_generation_prompt, inputs.template_kwargs);
  } catch (const Error& error) {
    return ApiError::bad_request(cat("the chat template failed: ", error.what()), "messages");
  }
}

std::variant<std::vector<int32_t>, ApiError> ApiServer::encode(const std::string& text,
                                                               bool add_special_tokens) const {
  try {
    return context_.tokenizer->encode(text, add_special_tokens);
  } catch (const Error& error) {
    // The tokenizer's post-processor is of a kind tidal cannot apply: the caller may do without.
    return ApiError::bad_request(cat(error.what(), "; pass add_special_tokens: false"),
                                 "add_special_tokens");
  }
}

HttpResponse ApiServer::tokenize(const std::string& body) const {
  std::variant<TokenizeRequest, ApiError> parsed =
      parse_tokenize_request(body, options_.request_limits);
  if (auto* error = std::get_if<ApiError>(&parsed)) return error_response(*error);
  const TokenizeRequest& request = std::get<TokenizeRequest>(parsed);
  if (request.model && *request.model != context_.model_name)
    return error_response(model_not_found(*request.model));
  std::string text;
  if (request.chat) {
    std::variant<std::string, ApiError> rendered = render_chat(*request.chat);
    if (auto* error = std::get_if<ApiError>(&rendered)) return error_response(*error);
    text = std::move(std::get<std::string>(rendered));
  } else {
    text = *request.prompt;
  }
  std::variant<std::vector<int32_t>, ApiError> encoded = encode(text, request.add_special_tokens);
  if (auto* error = std::get_if<ApiError>(&encoded)) return error_response(*error);
  const std::vector<int32_t>& ids = std::get<std::vector<int32_t>>(encoded);
  nlohmann::json token_strs = nullptr;
  if (request.return_token_strs) {
    token_strs = nlohmann::json::array();
    for (const int32_t id : ids) token_strs.push_back(context_.tokenizer->id_to_token(id));
  }
  return json_response(200, {{"count", ids.size()},
                             {"max_model_len", context_.engine->max_model_len()},
                             {"tokens", ids},
                             {"token_strs", token_strs}});
}

HttpResponse ApiServer::detokenize(const std::string& body) const {
  std::variant<DetokenizeRequest, ApiError> parsed =
      parse_detokenize_request(body, options_.request_limits);
  if (auto* error = std::get_if<ApiError>(&parsed)) return error_response(*error);
  const DetokenizeRequest& request = std::get<DetokenizeRequest>(parsed);
  if (request.model && *request.model != context_.model_name)
    return error_response(model_not_found(*request.model));
  const int32_t vocab = context_.tokenizer->vocab_size();
  for (const int32_t id : request.tokens) {
    if (id >= vocab) {
      return error_response(ApiError::bad_request(
          cat("token id ", id, " is outside the vocabulary (", vocab, " ids)"), "tokens"));
    }
  }
  // As vLLM: special tokens are kept, so that tokenize and detokenize are inverses.
  return json_response(200, {{"prompt", context_.tokenizer->decode(request.tokens, false)}});
}

std::vector<std::vector<int32_t>> ApiServer::bad_words_ids(
    const std::vector<std::string>& words) const {
  // As vLLM: each word as written (leading spaces stripped) and with one leading space, since
  // byte-level tokenizers spell a word differently after a space.
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& word : words) {
    const std::string stripped = word.substr(std::min(word.find_first_not_of(' '), word.size()));
    if (stripped.empty()) continue;
    for (const std::string& text : {stripped, " " + stripped}) {
      std::vector<int32_t> tokens = context_.tokenizer->encode(text);
      if (!tokens.empty() && std::find(ids.begin(), ids.end(), tokens) == ids.end())
        ids.push_back(std::move(tokens));
    }
  }
  return ids;
}

void ApiServer::generate(HttpRequest http_request, const std::shared_ptr<HttpExchange>& exchange,
                         bool chat) {
  std::variant<CompletionRequest, ApiError> completion;
  std::variant<ChatRequest, ApiError> chat_request;
  const GenerationRequest* request = nullptr;
  std::vector<std::vector<int32_t>> prompts;
  std::optional<bool> thinking_first;  // chat with --reasoning-parser only
  if (chat) {
    chat_request =
        parse_chat_request(http_request.body, context_.defaults, options_.request_limits);
    if (auto* error = std::get_if<ApiError>(&chat_request)) {
      return exchange->respond(error_response(*error));
    }
    request = &std::get<ChatRequest>(chat_request);
  } else {
    completion =
        parse_completion_request(http_request.body, context_.defaults, options_.request_limits);
    if (auto* error = std::get_if<ApiError>(&completion)) {
      return exchange->respond(error_response(*error));
    }
    request = &std::get<CompletionRequest>(completion);
  }
  if (request->model != context_.model_name) {
    return exchange->respond(error_response(model_not_found(request->model)));
  }
  SamplingParams& params = chat ? std::get<ChatRequest>(chat_request).params
                                : std::get<CompletionRequest>(completion).params;
  if (!request->bad_words.empty()) params.bad_words_ids = bad_words_ids(request->bad_words);
  if (const char* field = params.adjusted_sampling_field();
      field != nullptr && !context_.adjusted_sampling) {
    return exchange->respond(error_response(ApiError::bad_request(
        cat("the GPU sampler does not implement ", field, " yet (the CPU backend's does)"),
        field)));
  }
  if (const Status status = check_structured_output(params.structured_output); !status.is_ok()) {
    return exchange->respond(
        error_response(ApiError::bad_request(status.message(), params.structured_output.field)));
  }
  bool parse_tool_calls = false;
  if (chat && std::get<ChatRequest>(chat_request).tool_choice == "auto") {
    if (!context_.parse_tool_calls) {
      return exchange->respond(error_response(ApiError::bad_request(
          "tool_choice \"auto\" needs the server started with --tool-call-parser hermes; pass "
          "tool_choice \"none\" to give the template the tools and keep the answer as text",
          "tool_choice")));
    }
    parse_tool_calls = true;
  }
  if (chat) {
    std::variant<std::string, ApiError> rendered = render_chat(std::get<ChatRequest>(chat_request));
    if (auto* error = std::get_if<ApiError>(&rendered))
      return exchange->respond(error_response(*error));
    const std::string& text = std::get<std::string>(rendered);
    if (context_.reasoning) thinking_first = starts_in_reasoning(*context_.reasoning, text);
    std::variant<std::vector<int32_t>, ApiError> ids = encode(text, request->add_special_tokens);
    if (auto* error = std::get_if<ApiError>(&ids)) return exchange->respond(error_response(*error));
    prompts.push_back(std::move(std::get<std::vector<int32_t>>(ids)));
  } else {
    const CompletionRequest& parsed = std::get<CompletionRequest>(completion);
    for (const Prompt& prompt : parsed.prompts) {
      if (const auto* text = std::get_if<std::string>(&prompt)) {
        std::variant<std::vector<int32_t>, ApiError> ids =
            encode(*text, request->add_special_tokens);
        if (auto* error = std::get_if<ApiError>(&ids))
          return exchange->respond(error_response(*error));
        prompts.push_back(std::move(std::get<std::vector<int32_t>>(ids)));
      } else {
        prompts.push_back(std::get<std::vector<int32_t>>(prompt));
      }
    }
  }

  // Admission: a request that would wait behind more than --max-queued-requests choices is
  // turned away now, with a hint when to retry, instead of waiting without bound.
  const auto choices = static_cast<int64_t>(prompts.size()) * request->n;
  const int64_t in_flight = choices_in_flight_.fetch_add(choices) + choices;
  auto release = [this, choices] { choices_in_flight_.fetch_sub(choices); };
  if (context_.max_num_seqs > 0) {
    const int64_t running =
        static_cast<int64_t>(context_.engine->loads().size()) * context_.max_num_seqs;
    if (in_flight - running > options_.max_queued_requests) {
      release();
      HttpResponse busy = error_response(
          {.status = 503,
           .type = "server_error",
           .message = cat("the server is at capacity: ", in_flight - choices - running,
                          " requests are already waiting (--max-queued-requests ",
                          options_.max_queued_requests, "); retry shortly"),
           .param = "",
           .code = "server_busy"});
      busy.headers.emplace_back("Retry-After", "1");
      return exchange->respond(std::move(busy));
    }
  }

  const std::string id = cat(chat ? "chatcmpl-" : "cmpl-", std::hex, ++next_request_id_, std::dec,
                             "-", std::time(nullptr));
  auto started = Generation::start(*context_.engine, metrics_, *request, prompts, id);
  if (auto* error = std::get_if<ApiError>(&started)) {
    release();
    return exchange->respond(error_response(*error));
  }
  const ResponseFormat format{.chat = chat,
                              .model = context_.model_name,
                              .tokenizer = context_.tokenizer,
                              .return_token_ids = request->return_token_ids,
                              .logprobs = request->params.logprobs.has_value(),
                              .reasoning_starts_in_thinking = thinking_first,
                              .parse_tool_calls = parse_tool_calls,
                              .echo = !chat && std::get<CompletionRequest>(completion).echo,
                              .prompt_logprobs = request->show_prompt_logprobs};
  exchange->produce(std::make_shared<GenerationResponse>(
      std::move(std::get<std::unique_ptr<Generation>>(started)), format, request->stream,
      request->include_usage, std::move(release)));
}

}  // namespace tidal
