// A request body parsed into JSON with its nesting bounded while it parses: a deep value is never
// built, because copying, dumping or converting one recurses once per level.
#pragma once

#include <cstdint>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "server/openai_protocol.h"

namespace tidal {

// The body as JSON, or a 400 that says why not: not JSON, or arrays and objects nested deeper
// than max_depth (the body's own object is level 1). When the nesting is too deep, param names
// the top-level field it happened under. Nothing recurses over the input, however deep it is.
std::variant<nlohmann::json, ApiError> parse_request_json(std::string_view body, int32_t max_depth);

}  // namespace tidal
