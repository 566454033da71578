// Small readers for tokenizer.json fields that turn absent or mistyped fields into errors naming
// the file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "common/error.h"

namespace tidal::tok {

using Json = nlohmann::json;

inline const Json& require_field(const Json& object, std::string_view key, std::string_view where,
                                 const std::string& source) {
  TIDAL_CHECK(object.is_object(), "tokenizer ", source, ": ", where, " is not a JSON object");
  const auto it = object.find(key);
  if (it == object.end()) TIDAL_FAIL("tokenizer ", source, ": ", where, " has no \"", key, "\"");
  return *it;
}

inline bool bool_field(const Json& object, std::string_view key, bool fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  return it->get<bool>();
}

// The "type" of a component, e.g. "NFC" for {"type": "NFC"}.
inline std::string type_field(const Json& object, std::string_view where,
                              const std::string& source) {
  const Json& type = require_field(object, "type", where, source);
  TIDAL_CHECK(type.is_string(), "tokenizer ", source, ": ", where, " \"type\" is not a string");
  return type.get<std::string>();
}

}  // namespace tidal::tok
