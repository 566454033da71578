// Admin routes over the engine's ScaleControl.
#include "server/admin_routes.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <variant>

#include "common/logging.h"
#include "server/http_json.h"
#include "server/request_json.h"

namespace tidal {
namespace {

ApiError error_of(const Status& status) {
  const int http = status.code() == StatusCode::kConflict          ? 409
                   : status.code() == StatusCode::kInvalidArgument ? 400
                                                                   : 503;
  return {.status = http,
          .type = http == 503 ? "server_error" : "invalid_request_error",
          .message = status.message(),
          .param = http == 400 ? "ranks" : "",
          .code = http == 409   ? "scale_in_progress"
                  : http == 400 ? "invalid_target"
                                : "unavailable"};
}

const ApiError kNotElastic{
    .status = 400,
    .type = "invalid_request_error",
    .message =
        "this server runs one in-process engine and cannot scale; start it with "
        "--enable-elastic-ep (or --ranks N) to serve through rank processes",
    .param = "",
    .code = "not_elastic"};

// The request body as JSON, or the 400 to send.
std::variant<nlohmann::json, ApiError> parse_body(const HttpRequest& request) {
  // Admin bodies are a field or two: nothing deeper than that is read.
  constexpr int32_t kMaxDepth = 4;
  auto body = parse_request_json(request.body, kMaxDepth);
  if (const auto* json = std::get_if<nlohmann::json>(&body);
      json != nullptr && !json->is_object()) {
    return ApiError::bad_request("the body must be a JSON object");
  }
  return body;
}

// Reads an integer field, or the 400 when it is absent or not one.
std::variant<int, ApiError> int_field(const nlohmann::json& body, const char* name) {
  const auto it = body.find(name);
  // Ranks are small numbers: anything outside int is refused rather than wrapped.
  if (it == body.end() || !it->is_number_integer() || it->get<int64_t>() < -(int64_t{1} << 30) ||
      it->get<int64_t>() > (int64_t{1} << 30)) {
    return ApiError::bad_request(cat("'", name, "' must be an integer"), name);
  }
  return static_cast<int>(it->get<int64_t>());
}

// The record of an operation just started; a 500 when it is already gone (never, in practice:
// records are kept for the last 100 operations).
std::variant<nlohmann::json, ApiError> started_operation(ScaleControl& scaling,
                                                         const std::string& id) {
  std::optional<nlohmann::json> operation = scaling.scale_operation(id);
  if (!operation) {
    return ApiError{.status = 500,
                    .type = "server_error",
                    .message = cat("scale operation ", id, " has no record"),
                    .param = "",
                    .code = "internal_error"};
  }
  return *operation;
}

HttpResponse scale(ScaleControl* scaling, const HttpRequest& http_request) {
  if (scaling == nullptr) return error_response(kNotElastic);
  const auto body = parse_body(http_request);
  if (const auto* error = std::get_if<ApiError>(&body)) return error_response(*error);
  const nlohmann::json& fields = std::get<nlohmann::json>(body);
  const auto ranks = int_field(fields, "ranks");
  if (const auto* error = std::get_if<ApiError>(&ranks)) return error_response(*error);
  ScaleRequest request{.target_ranks = std::get<int>(ranks)};
  if (const auto remove = fields.find("remove_ranks"); remove != fields.end()) {
    if (!remove->is_array() ||
        !std::all_of(remove->begin(), remove->end(), [](const nlohmann::json& rank) {
          return rank.is_number_integer() && rank.get<int64_t>() >= 0 &&
                 rank.get<int64_t>() <= (int64_t{1} << 30);
        })) {
      return error_response(
          ApiError::bad_request("'remove_ranks' must be a list of rank indices", "remove_ranks"));
    }
    request.remove_ranks = remove->get<std::vector<int>>();
  }
  const Result<std::string> started = scaling->start_scale(request);
  if (!started.is_ok()) return error_response(error_of(started.status()));
  const auto operation = started_operation(*scaling, started.value());
  if (const auto* error = std::get_if<ApiError>(&operation)) return error_response(*error);
  const nlohmann::json& record = std::get<nlohmann::json>(operation);
  return json_response(record.at("phase") == "done" ? 200 : 202, record);
}

HttpResponse scale_status(ScaleControl* scaling, const std::string& id) {
  if (scaling == nullptr) return error_response(kNotElastic);
  const std::optional<nlohmann::json> operation = scaling->scale_operation(id);
  if (!operation) {
    return error_response({.status = 404,
                           .type = "invalid_request_error",
                           .message = cat("no scale operation '", id, "'"),
                           .param = "",
                           .code = "not_found"});
  }
  return json_response(200, *operation);
}

HttpResponse topology(ScaleControl* scaling) {
  if (scaling == nullptr) {
    return json_response(
        200, {{"epoch", 0}, {"num_ranks", 1}, {"elastic", false}, {"scaling", nullptr}});
  }
  nlohmann::json topology = scaling->topology();
  topology["elastic"] = true;
  return json_response(200, topology);
}

// vLLM's elastic EP endpoint blocks until the new size serves; so does this alias (on a worker
// thread: transitions run one at a time, so at most one waits here).
HttpResponse scale_elastic_ep(ScaleControl* scaling, const HttpRequest& http_request) {
  if (scaling == nullptr) return error_response(kNotElastic);
  const auto body = parse_body(http_request);
  if (const auto* error = std::get_if<ApiError>(&body)) return error_response(*error);
  const auto size = int_field(std::get<nlohmann::json>(body), "new_data_parallel_size");
  if (const auto* error = std::get_if<ApiError>(&size)) return error_response(*error);
  const Result<std::string> started = scaling->start_scale({.target_ranks = std::get<int>(size)});
  if (!started.is_ok()) return error_response(error_of(started.status()));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  for (;;) {
    const auto record = started_operation(*scaling, started.value());
    if (const auto* error = std::get_if<ApiError>(&record)) return error_response(*error);
    const nlohmann::json& operation = std::get<nlohmann::json>(record);
    if (operation.at("phase") == "done") {
      return json_response(
          200, {{"message", cat("Scaled to ", std::get<int>(size), " data parallel engines")},
                {"operation", operation}});
    }
    if (operation.at("phase") == "failed") {
      return error_response({.status = 500,
                             .type = "server_error",
                             .message = operation.at("error").get<std::string>(),
                             .param = "",
                             .code = "scale_failed"});
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return error_response(
          {.status = 504,
           .type = "server_error",
           .message = cat("scale operation ", started.value(),
                          " is still running; see /v1/admin/scale/", started.value()),
           .param = "",
           .code = "timeout"});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

void add_admin_routes(std::vector<HttpRoute>& routes, EngineClient& engine) {
  ScaleControl* scaling = engine.scale_control();
  using Exchange = std::shared_ptr<HttpExchange>;
  routes.push_back({.method = "POST",
                    .path = "/v1/admin/scale",
                    .prefix = false,
                    .offload = true,
                    .handler = [scaling](HttpRequest request, Exchange exchange) {
                      exchange->respond(scale(scaling, request));
                    }});
  routes.push_back({.method = "GET",
                    .path = "/v1/admin/scale/",
                    .prefix = true,
                    .offload = true,
                    .handler = [scaling](HttpRequest request, Exchange exchange) {
                      const std::string id = request.path.substr(request.path.rfind('/') + 1);
                      exchange->respond(scale_status(scaling, id));
                    }});
  routes.push_back({.method = "GET",
                    .path = "/v1/admin/topology",
                    .prefix = false,
                    .offload = true,
                    .handler = [scaling](HttpRequest, Exchange exchange) {
                      exchange->respond(topology(scaling));
                    }});
  routes.push_back({.method = "POST",
                    .path = "/scale_elastic_ep",
                    .prefix = false,
                    .offload = true,
                    .handler = [scaling](HttpRequest request, Exchange exchange) {
                      exchange->respond(scale_elastic_ep(scaling, request));
                    }});
  routes.push_back(
      {.method = "POST",
       .path = "/is_scaling_elastic_ep",
       .prefix = false,
       .offload = false,
       .handler = [scaling](HttpRequest, Exchange exchange) {
         exchange->respond(json_response(
             200, {{"is_scaling_elastic_ep", scaling != nullptr && scaling->is_scaling()}}));
       }});
}

}  // namespace tidal
