// JSON and OpenAI-style error responses, for every route of the server.
#pragma once

#include <nlohmann/json.hpp>

#include "server/http/http_message.h"
#include "server/openai_protocol.h"

namespace tidal {

inline HttpResponse json_response(int status, const nlohmann::json& body) {
  return {.status = status,
          .content_type = "application/json",
          .body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
}

inline HttpResponse error_response(const ApiError& error) {
  return json_response(error.status, error.body());
}

}  // namespace tidal
