// Who may call what: API keys, admin routes for loopback clients only when no admin key is set,
// JSON-only POST bodies, and CORS when origins are allowed. Pure functions of the request, so the
// policy is tested without a server.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/http_message.h"

namespace tidal {

struct AccessOptions {
  std::string api_key;            // "Authorization: Bearer <key>" on /v1/*; empty: open
  std::string admin_api_key;      // the same on the admin routes; empty: loopback clients only
  bool metrics_need_key = false;  // /metrics needs the API or the admin key
  std::vector<std::string> allowed_origins = {};  // CORS: origins, or "*"; empty: no CORS
};

enum class RouteAccess {
  kOpen,     // /health and unknown paths
  kMetrics,  // /metrics
  kApi,      // /v1/*
  kAdmin,    // /v1/admin/*, /scale_elastic_ep, /is_scaling_elastic_ep
};

RouteAccess route_access(std::string_view path);

// The refusal for a request the policy does not let through (401, 403, 415), or the answer to a
// CORS preflight (204); nullopt lets it through to its route.
std::optional<HttpResponse> check_access(const HttpRequest& request, const AccessOptions& options);

// Adds the CORS headers a response to an allowed origin carries; nothing without one.
void add_cors_headers(const HttpRequest& request, const AccessOptions& options,
                      HttpResponse& response);

}  // namespace tidal
