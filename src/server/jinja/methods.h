// The str, dict and list methods templates call (`text.split('x')`, `d.items()`), and the Python
// string algorithms behind them that filters share.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/jinja/value.h"

namespace tidal::jinja {

// `self.name` as a bound method; nullopt when Python's type has no such attribute. Mutating
// methods (list.append, dict.update, ...) come back undefined, as in Jinja's immutable sandbox.
std::optional<Value> find_method(const Value& self, std::string_view name);

// Python's str.split / str.rsplit; `separator` == nullptr splits on runs of whitespace.
std::vector<std::string> py_split(std::string_view text, const std::string* separator,
                                  int64_t max_split, bool from_right);
std::string py_replace(std::string_view text, std::string_view old_text, std::string_view new_text,
                       int64_t count);
std::vector<std::string> py_splitlines(std::string_view text, bool keep_ends);
std::string py_title(std::string_view text);       // str.title
std::string py_capitalize(std::string_view text);  // str.capitalize

}  // namespace tidal::jinja
