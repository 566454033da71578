// The access policy: keys compared in constant time, the loopback rule, JSON bodies, CORS.
#include "server/access_policy.h"

#include <algorithm>

#include "common/error.h"
#include "common/secret_compare.h"
#include "server/http_json.h"

namespace tidal {
namespace {

bool has_key(const HttpRequest& request, const std::string& key) {
  const std::string* authorization = request.header("authorization");
  if (authorization == nullptr) return false;
  const std::string_view value = trim_header_value(*authorization);
  if (value.size() < 7 || !equals_ignoring_case(value.substr(0, 7), "bearer ")) return false;
  return secrets_equal(key, trim_header_value(value.substr(7)));
}

// The Host header names this machine's loopback (or is absent, as in HTTP/1.0): a page that
// reached 127.0.0.1 through a rebound DNS name of its own still sends that name here.
bool host_is_loopback(const HttpRequest& request) {
  const std::string* host_header = request.header("host");
  if (host_header == nullptr) return true;
  std::string_view host = trim_header_value(*host_header);
  if (host.starts_with('[')) {
    host =
        host.substr(1, host.find(']') == std::string_view::npos ? host.size() : host.find(']') - 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  return equals_ignoring_case(host, "localhost") || host == "::1" || host.starts_with("127.");
}

ApiError unauthorized(const std::string& message) {
  return {.status = 401,
          .type = "invalid_request_error",
          .message = message,
          .param = "",
          .code = "invalid_api_key"};
}

const std::string* allowed_origin(const HttpRequest& request, const AccessOptions& options) {
  const std::string* origin = request.header("origin");
  if (origin == nullptr || options.allowed_origins.empty()) return nullptr;
  for (const std::string& allowed : options.allowed_origins) {
    if (allowed == "*" || allowed == *origin) return origin;
  }
  return nullptr;
}

}  // namespace

RouteAccess route_access(std::string_view path) {
  if (path == "/metrics") return RouteAccess::kMetrics;
  if (path == "/v1/admin" || path.starts_with("/v1/admin/") || path == "/scale_elastic_ep" ||
      path == "/is_scaling_elastic_ep") {
    return RouteAccess::kAdmin;
  }
  // /tokenize and /detokenize sit outside /v1 (vLLM's paths) but run the tokenizer and templates:
  // they need the API key like the rest of the API.
  if (path.starts_with("/v1/") || path == "/tokenize" || path == "/detokenize")
    return RouteAccess::kApi;
  return RouteAccess::kOpen;
}

std::optional<HttpResponse> check_access(const HttpRequest& request, const AccessOptions& options) {
  if (request.method == "OPTIONS" && request.header("access-control-request-method") != nullptr) {
    if (allowed_origin(request, options) == nullptr) return std::nullopt;  // the route says 405
    HttpResponse preflight{.status = 204, .content_type = "text/plain", .body = {}};
    preflight.headers = {{"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                         {"Access-Control-Allow-Headers", "authorization, content-type"},
                         {"Access-Control-Max-Age", "600"}};
    return preflight;
  }
  switch (route_access(request.path)) {
    case RouteAccess::kOpen:
      break;
    case RouteAccess::kMetrics:
      if (options.metrics_need_key &&
          !(has_key(request, options.api_key) || has_key(request, options.admin_api_key))) {
        return error_response(unauthorized("/metrics needs the API key (--metrics-need-key)"));
      }
      break;
    case RouteAccess::kApi:
      if (!options.api_key.empty() && !has_key(request, options.api_key)) {
        return error_response(
            unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'"));
      }
      break;
    case RouteAccess::kAdmin:
      if (!options.admin_api_key.empty()) {
        if (!has_key(request, options.admin_api_key)) {
          return error_response(unauthorized(
              "the admin endpoints need the admin key: send 'Authorization: Bearer <key>'"));
        }
      } else if (!request.peer_is_loopback || !host_is_loopback(request)) {
        return error_response({.status = 403,
                               .type = "invalid_request_error",
                               .message = "without --admin-api-key the admin endpoints serve "
                                          "loopback clients only (and a loopback Host)",
                               .param = "",
                               .code = "forbidden"});
      }
      break;
  }
  // A browser sends a cross-site POST without asking first only with a form or text body; the
  // API takes JSON alone, so such a request never reaches a route.
  if (request.method == "POST" && !request.body.empty()) {
    const std::string* type = request.header("content-type");
    const std::string_view media =
        type == nullptr ? std::string_view{}
                        : trim_header_value(std::string_view(*type).substr(0, type->find(';')));
    if (!equals_ignoring_case(media, "application/json")) {
      return error_response(
          {.status = 415,
           .type = "invalid_request_error",
           .message = cat("the request body must be JSON (Content-Type: application/json), not '",
                          type == nullptr ? "" : *type, "'"),
           .param = "",
           .code = "unsupported_media_type"});
    }
  }
  return std::nullopt;
}

void add_cors_headers(const HttpRequest& request, const AccessOptions& options,
                      HttpResponse& response) {
  const std::string* origin = allowed_origin(request, options);
  if (origin == nullptr) return;
  const bool any = std::ranges::find(options.allowed_origins, "*") != options.allowed_origins.end();
  response.headers.emplace_back("Access-Control-Allow-Origin", any ? "*" : *origin);
  if (!any) response.headers.emplace_back("Vary", "Origin");
}

}  // namespace tidal
