// Admin routes over the engine's ScaleControl.
#include "server/admin_routes.h"

#include <chrono>
#include <thread>

#include "common/logging.h"
#include "server/http_json.h"

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

// The request body as JSON, or nullopt after writing the 400.
std::optional<nlohmann::json> parse_body(const httplib::Request& req, httplib::Response& res) {
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    send_error(res, ApiError::bad_request("the body must be a JSON object"));
    return std::nullopt;
  }
  return body;
}

// Reads an integer field; writes the 400 and returns nullopt when it is absent or not one.
std::optional<int> int_field(const nlohmann::json& body, const char* name, httplib::Response& res) {
  const auto it = body.find(name);
  // Ranks are small numbers: anything outside int is refused rather than wrapped.
  if (it == body.end() || !it->is_number_integer() || it->get<int64_t>() < -(int64_t{1} << 30) ||
      it->get<int64_t>() > (int64_t{1} << 30)) {
    send_error(res, ApiError::bad_request(cat("'", name, "' must be an integer"), name));
    return std::nullopt;
  }
  return static_cast<int>(it->get<int64_t>());
}

// The record of an operation just started; a 500 when it is already gone (never, in practice:
// records are kept for the last 100 operations).
std::optional<nlohmann::json> started_operation(ScaleControl& scaling, const std::string& id,
                                                httplib::Response& res) {
  std::optional<nlohmann::json> operation = scaling.scale_operation(id);
  if (!operation) {
    send_error(res, {.status = 500,
                     .type = "server_error",
                     .message = cat("scale operation ", id, " has no record"),
                     .param = "",
                     .code = "internal_error"});
  }
  return operation;
}

}  // namespace

void register_admin_routes(httplib::Server& http, EngineClient& engine) {
  ScaleControl* scaling = engine.scale_control();

  http.Post("/v1/admin/scale", [scaling](const httplib::Request& req, httplib::Response& res) {
    if (scaling == nullptr) return send_error(res, kNotElastic);
    const std::optional<nlohmann::json> body = parse_body(req, res);
    if (!body) return;
    const std::optional<int> ranks = int_field(*body, "ranks", res);
    if (!ranks) return;
    ScaleRequest request{.target_ranks = *ranks};
    if (const auto remove = body->find("remove_ranks"); remove != body->end()) {
      if (!remove->is_array() ||
          !std::all_of(remove->begin(), remove->end(), [](const nlohmann::json& rank) {
            return rank.is_number_integer() && rank.get<int64_t>() >= 0 &&
                   rank.get<int64_t>() <= (int64_t{1} << 30);
          })) {
        return send_error(
            res,
            ApiError::bad_request("'remove_ranks' must be a list of rank indices", "remove_ranks"));
      }
      request.remove_ranks = remove->get<std::vector<int>>();
    }
    const Result<std::string> started = scaling->start_scale(request);
    if (!started.is_ok()) return send_error(res, error_of(started.status()));
    const std::optional<nlohmann::json> operation =
        started_operation(*scaling, started.value(), res);
    if (operation) send_json(res, operation->at("phase") == "done" ? 200 : 202, *operation);
  });

  http.Get(R"(/v1/admin/scale/([^/]+))", [scaling](const httplib::Request& req,
                                                   httplib::Response& res) {
    if (scaling == nullptr) return send_error(res, kNotElastic);
    const std::optional<nlohmann::json> operation = scaling->scale_operation(req.matches[1].str());
    if (!operation) {
      return send_error(res, {.status = 404,
                              .type = "invalid_request_error",
                              .message = cat("no scale operation '", req.matches[1].str(), "'"),
                              .param = "",
                              .code = "not_found"});
    }
    send_json(res, 200, *operation);
  });

  http.Get("/v1/admin/topology", [scaling](const httplib::Request&, httplib::Response& res) {
    if (scaling == nullptr) {
      return send_json(res, 200,
                       {{"epoch", 0}, {"num_ranks", 1}, {"elastic", false}, {"scaling", nullptr}});
    }
    nlohmann::json topology = scaling->topology();
    topology["elastic"] = true;
    send_json(res, 200, topology);
  });

  // vLLM's elastic EP endpoint blocks until the new size serves; so does this alias.
  http.Post("/scale_elastic_ep", [scaling](const httplib::Request& req, httplib::Response& res) {
    if (scaling == nullptr) return send_error(res, kNotElastic);
    const std::optional<nlohmann::json> body = parse_body(req, res);
    if (!body) return;
    const std::optional<int> size = int_field(*body, "new_data_parallel_size", res);
    if (!size) return;
    const Result<std::string> started = scaling->start_scale({.target_ranks = *size});
    if (!started.is_ok()) return send_error(res, error_of(started.status()));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    for (;;) {
      const std::optional<nlohmann::json> record =
          started_operation(*scaling, started.value(), res);
      if (!record) return;
      const nlohmann::json& operation = *record;
      if (operation.at("phase") == "done") {
        return send_json(res, 200,
                         {{"message", cat("Scaled to ", *size, " data parallel engines")},
                          {"operation", operation}});
      }
      if (operation.at("phase") == "failed") {
        return send_error(res, {.status = 500,
                                .type = "server_error",
                                .message = operation.at("error").get<std::string>(),
                                .param = "",
                                .code = "scale_failed"});
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return send_error(
            res, {.status = 504,
                  .type = "server_error",
                  .message = cat("scale operation ", started.value(),
                                 " is still running; see /v1/admin/scale/", started.value()),
                  .param = "",
                  .code = "timeout"});
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  http.Post("/is_scaling_elastic_ep", [scaling](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"is_scaling_elastic_ep", scaling != nullptr && scaling->is_scaling()}});
  });
}

}  // namespace tidal
