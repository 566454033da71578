// Python's text forms of values: str(), repr() and json.dumps(), byte-exact with CPython.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "server/jinja/value.h"

namespace tidal::jinja {

// Every function here throws tidal::Error once its output would pass `limit` bytes: shared
// sub-lists can make a small value print enormously.
inline constexpr size_t kNoLimit = static_cast<size_t>(-1);

std::string float_repr(double value);
std::string string_repr(std::string_view text);

// str(value), which is what `{{ value }}` prints; undefined prints nothing.
void append_str(std::string& out, const Value& value, size_t limit = kNoLimit);
std::string to_str(const Value& value, size_t limit = kNoLimit);
std::string repr(const Value& value, size_t limit = kNoLimit);

// The arguments of json.dumps that transformers' `tojson` filter forwards.
struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;          // std::nullopt: everything on one line
  std::optional<std::string> item_separator;  // default ", " (or "," when indented)
  std::string key_separator = ": ";
  bool sort_keys = false;
};

std::string to_json(const Value& value, const JsonOptions& options, size_t limit = kNoLimit);

}  // namespace tidal::jinja
