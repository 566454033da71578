// JSON and OpenAI-style error replies on an httplib response, for every route of the server.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "server/openai_protocol.h"

namespace tidal {

inline void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

inline void send_error(httplib::Response& res, const ApiError& error) {
  send_json(res, error.status, error.body());
}

}  // namespace tidal
