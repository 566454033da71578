// The str, dict and list methods templates call (`text.split('x')`, `d.items()`), and the Python
// string algorithms behind them that filters share.
#include "server/jinja/methods.h"

#include <algorithm>
#include <array>

#include "common/error.h"
#include "server/jinja/ops.h"
#include "server/jinja/py_format.h"
#include "server/jinja/runtime.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

using Method = Value (*)(Runtime&, const Value& self, const CallArgs& args);

Value string_list(std::vector<std::string> parts, Runtime& runtime) {
  runtime.charge(parts.size());
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& part : parts) items.push_back(Value::from_string(std::move(part)));
  return Value::from_list(std::move(items));
}

const std::string& require_string(const BoundArgs& args, size_t index) {
  const Value* value = args.get(index);
  if (value == nullptr || !value->is_string()) {
    TIDAL_FAIL(args.what(), " needs a string argument, got ",
               value == nullptr ? "nothing" : type_name(*value));
  }
  return value->as_string();
}

// The code point range [start, end) of `text` as byte offsets, Python slice style.
std::pair<size_t, size_t> byte_range(const std::string& text, const BoundArgs& args, size_t first) {
  if (!args.has(first) && !args.has(first + 1)) return {0, text.size()};
  const Value start = args.has(first) ? *args.get(first) : Value::none();
  const Value stop = args.has(first + 1) ? *args.get(first + 1) : Value::none();
  const auto offsets = code_point_offsets(text);
  const auto count = static_cast<int64_t>(offsets.size()) - 1;
  auto clamp = [&](const Value& bound, int64_t fallback) {
    if (bound.is_none()) return fallback;
    if (!bound.is_integral()) TIDAL_FAIL(args.what(), " needs integer bounds");
    int64_t index = bound.as_int();
    if (index < 0) index = index < -count ? 0 : index + count;
    return index > count ? count : index;
  };
  const int64_t begin = clamp(start, 0);
  const int64_t end = std::max(begin, clamp(stop, count));
  return {offsets[static_cast<size_t>(begin)], offsets[static_cast<size_t>(end)]};
}

Value affix_test(const Value& self, const CallArgs& call, bool prefix) {
  BoundArgs args(prefix ? "str.startswith" : "str.endswith", call, {"affix", "start", "end"});
  const std::string& text = self.as_string();
  const auto [begin, end] = byte_range(text, args, 1);
  const std::string_view window = std::string_view(text).substr(begin, end - begin);
  const Value* affix = args.get(0);
  std::vector<const std::string*> candidates;
  if (affix != nullptr && affix->is_string()) {
    candidates.push_back(&affix->as_string());
  } else if (affix != nullptr && affix->is_tuple()) {
    for (const Value& item : affix->items()) {
      if (!item.is_string()) TIDAL_FAIL(args.what(), " needs a str or a tuple of str");
      candidates.push_back(&item.as_string());
    }
  } else {
    TIDAL_FAIL(args.what(), " first arg must be str or a tuple of str, not ",
               affix == nullptr ? "nothing" : type_name(*affix));
  }
  for (const std::string* candidate : candidates) {
    if (prefix ? window.starts_with(*candidate) : window.ends_with(*candidate)) {
      return Value::from_bool(true);
    }
  }
  return Value::from_bool(false);
}

Value strip_method(const Value& self, const CallArgs& call, const char* what, bool left,
                   bool right) {
  BoundArgs args(what, call, {"chars"});
  const Value* chars = args.get(0);
  if (chars != nullptr && !chars->is_none() && !chars->is_string()) {
    TIDAL_FAIL(what, " arg must be None or str");
  }
  const std::string* set = (chars != nullptr && chars->is_string()) ? &chars->as_string() : nullptr;
  return Value::from_string(std::string(strip(self.as_string(), set, left, right)));
}

Value split_method(Runtime& runtime, const Value& self, const CallArgs& call, bool from_right) {
  BoundArgs args(from_right ? "str.rsplit" : "str.split", call, {"sep", "maxsplit"});
  const Value* separator = args.get(0);
  const std::string* sep = nullptr;
  if (separator != nullptr && !separator->is_none()) {
    if (!separator->is_string()) TIDAL_FAIL(args.what(), " separator must be str or None");
    sep = &separator->as_string();
    if (sep->empty()) TIDAL_FAIL("empty separator");
  }
  runtime.charge(self.as_string().size());
  return string_list(py_split(self.as_string(), sep, args.get_int(1, -1), from_right), runtime);
}

// Index in code points of the byte offset `byte` within `text`.
int64_t code_point_index(const std::string& text, size_t byte) {
  return static_cast<int64_t>(code_point_count(std::string_view(text).substr(0, byte)));
}

Value find_method_impl(const Value& self, const CallArgs& call, const char* what, bool reverse,
                       bool must_find) {
  BoundArgs args(what, call, {"sub", "start", "end"});
  const std::string& text = self.as_string();
  const std::string& needle = require_string(args, 0);
  const auto [begin, end] = byte_range(text, args, 1);
  const std::string_view window = std::string_view(text).substr(begin, end - begin);
  const size_t found = reverse ? window.rfind(needle) : window.find(needle);
  if (found == std::string_view::npos) {
    if (must_find) TIDAL_FAIL("substring not found");
    return Value::from_int(-1);
  }
  return Value::from_int(code_point_index(text, begin + found));
}

template <bool (*Predicate)(char32_t)>
Value all_characters(const Value& self, const CallArgs& call, const char* what) {
  BoundArgs args(what, call, {});
  const std::string& text = self.as_string();
  if (text.empty()) return Value::from_bool(false);
  size_t pos = 0;
  while (pos < text.size()) {
    if (!Predicate(next_code_point(text, pos))) return Value::from_bool(false);
  }
  return Value::from_bool(true);
}

bool is_alnum(char32_t c) {
  return is_alpha(c) || is_digit(c);
}

// str.isupper / str.islower: at least one cased character, and none of the other case.
Value case_test(const Value& self, const CallArgs& call, const char* what, bool want_upper) {
  BoundArgs args(what, call, {});
  const std::string& text = self.as_string();
  bool any_cased = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    if (want_upper ? is_lower(c) : is_upper(c)) return Value::from_bool(false);
    if (want_upper ? is_upper(c) : is_lower(c)) any_cased = true;
  }
  return Value::from_bool(any_cased);
}

// str.format with positional ({} {0}) and keyword ({name}) fields and !r / !s conversions; format
// specs and field indexing ({0[1]}, {a.b}) are refused.
std::string py_format_method(Runtime& runtime, const std::string& format, const CallArgs& call) {
  std::string out;
  size_t automatic = 0;
  bool numbered = false;
  size_t i = 0;
  while (i < format.size()) {
    const char c = format[i++];
    if (c == '}') {
      if (i < format.size() && format[i] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      TIDAL_FAIL("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i < format.size() && format[i] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) TIDAL_FAIL("Single '{' encountered in format string");
    std::string field = format.substr(i, close - i);
    i = close + 1;
    char conversion = 's';
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      if (bang + 2 != field.size()) TIDAL_FAIL("str.format conversion must be !r, !s or !a");
      conversion = field[bang + 1];
      field.resize(bang);
    }
    if (field.find_first_of(":.[") != std::string::npos) {
      TIDAL_FAIL("str.format specs and field lookups are not supported: {", field, "}");
    }
    const Value* value = nullptr;
    if (field.empty() ||
        std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      if (field.empty() ? numbered : automatic > 0) {
        TIDAL_FAIL("cannot switch between automatic and manual field numbering");
      }
      numbered = numbered || !field.empty();
      const size_t index = field.empty() ? automatic++ : std::stoul(field.substr(0, 9));
      if (index >= call.positional.size()) TIDAL_FAIL("Replacement index ", index, " out of range");
      value = &call.positional[index];
    } else {
      for (const auto& [key, argument] : call.keyword) {
        if (key == field) value = &argument;
      }
      if (value == nullptr) TIDAL_FAIL("str.format: no argument named '", field, "'");
    }
    if (conversion == 's') {
      append_str(out, *value, runtime.text_limit());
    } else if (conversion == 'r' || conversion == 'a') {
      out += repr(*value, runtime.text_limit());
    } else {
      TIDAL_FAIL("Unknown conversion specifier ", conversion);
    }
    if (out.size() > runtime.text_limit()) TIDAL_FAIL("formatted string too long");
  }
  runtime.charge(out.size());
  return out;
}

Value str_method(Runtime& runtime, std::string_view name, const Value& self, const CallArgs& call) {
  const std::string& text = self.as_string();
  if (name == "startswith") return affix_test(self, call, true);
  if (name == "endswith") return affix_test(self, call, false);
  if (name == "strip") return strip_method(self, call, "str.strip", true, true);
  if (name == "lstrip") return strip_method(self, call, "str.lstrip", true, false);
  if (name == "rstrip") return strip_method(self, call, "str.rstrip", false, true);
  if (name == "split") return split_method(runtime, self, call, false);
  if (name == "rsplit") return split_method(runtime, self, call, true);
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    BoundArgs args(cat("str.", name), call, {});
    runtime.charge(text.size());
    if (name == "upper") return Value::from_string(upper(text));
    if (name == "lower") return Value::from_string(lower(text));
    if (name == "title") return Value::from_string(py_title(text));
    return Value::from_string(py_capitalize(text));
  }
  if (name == "replace") {
    BoundArgs args("str.replace", call, {"old", "new", "count"});
    const std::string& old_text = require_string(args, 0);
    const std::string& new_text = require_string(args, 1);
    const int64_t count = args.get_int(2, -1);
    // An empty `old` inserts `new` between every character; bound the size before building.
    const size_t pieces =
        old_text.empty() ? code_point_count(text) + 1 : text.size() / old_text.size() + 1;
    if (new_text.size() > 0 && pieces > runtime.text_limit() / new_text.size()) {
      TIDAL_FAIL("str.replace result longer than the limit of ", runtime.text_limit(), " bytes");
    }
    runtime.charge(text.size() + pieces * new_text.size());
    return Value::from_string(py_replace(text, old_text, new_text, count));
  }
  if (name == "find") return find_method_impl(self, call, "str.find", false, false);
  if (name == "rfind") return find_method_impl(self, call, "str.rfind", true, false);
  if (name == "index") return find_method_impl(self, call, "str.index", false, true);
  if (name == "rindex") return find_method_impl(self, call, "str.rindex", true, true);
  if (name == "count") {
    BoundArgs args("str.count", call, {"sub", "start", "end"});
    const std::string& needle = require_string(args, 0);
    const auto [begin, end] = byte_range(text, args, 1);
    const std::string_view window = std::string_view(text).substr(begin, end - begin);
    if (needle.empty()) return Value::from_int(static_cast<int64_t>(code_point_count(window) + 1));
    int64_t count = 0;
    for (size_t at = window.find(needle); at != std::string_view::npos;
         at = window.find(needle, at + needle.size())) {
      ++count;
    }
    return Value::from_int(count);
  }
  if (name == "join") {
    BoundArgs args("str.join", call, {"iterable"});
    if (!args.has(0)) TIDAL_FAIL("str.join needs an iterable");
    const std::vector<Value> items = iterate(*args.get(0));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        TIDAL_FAIL("sequence item ", i, ": expected str instance, ", type_name(items[i]), " found");
      }
      if (i > 0) out += text;
      out += items[i].as_string();
      if (out.size() > runtime.text_limit()) TIDAL_FAIL("str.join result too long");
    }
    runtime.charge(out.size() + items.size());
    return Value::from_string(std::move(out));
  }
  if (name == "splitlines") {
    BoundArgs args("str.splitlines", call, {"keepends"});
    runtime.charge(text.size());
    return string_list(py_splitlines(text, args.get_bool(0, false)), runtime);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    BoundArgs args(cat("str.", name), call, {"affix"});
    const std::string& affix = require_string(args, 0);
    std::string_view view = text;
    if (name == "removeprefix" && view.starts_with(affix)) view.remove_prefix(affix.size());
    if (name == "removesuffix" && view.ends_with(affix)) view.remove_suffix(affix.size());
    return Value::from_string(std::string(view));
  }
  if (name == "format") return Value::from_string(py_format_method(runtime, text, call));
  if (name == "isdigit") return all_characters<is_digit>(self, call, "str.isdigit");
  if (name == "isnumeric") return all_characters<is_digit>(self, call, "str.isnumeric");
  if (name == "isalpha") return all_characters<is_alpha>(self, call, "str.isalpha");
  if (name == "isalnum") return all_characters<is_alnum>(self, call, "str.isalnum");
  if (name == "isspace") return all_characters<is_space>(self, call, "str.isspace");
  if (name == "isupper") return case_test(self, call, "str.isupper", true);
  if (name == "islower") return case_test(self, call, "str.islower", false);
  TIDAL_FAIL("str method '", name, "' is not supported");
}

constexpr std::array kStrMethods = {
    "startswith", "endswith", "strip",        "lstrip",       "rstrip",     "split",
    "rsplit",     "upper",    "lower",        "title",        "capitalize", "replace",
    "find",       "rfind",    "index",        "rindex",       "count",      "join",
    "splitlines", "isdigit",  "isnumeric",    "isalpha",      "isalnum",    "isspace",
    "isupper",    "islower",  "removeprefix", "removesuffix", "format"};
// Python str attributes this interpreter does not implement: calling them reports so, rather
// than silently falling through to an undefined value.
constexpr std::array kStrUnsupported = {
    "format_map", "center",    "ljust",        "rjust",       "zfill",   "swapcase",
    "casefold",   "partition", "rpartition",   "expandtabs",  "encode",  "translate",
    "istitle",    "isdecimal", "isidentifier", "isprintable", "isascii", "maketrans"};

constexpr std::array kDictMethods = {"items", "keys", "values", "get", "copy"};
constexpr std::array kDictMutators = {"pop", "popitem", "update", "clear", "setdefault"};
constexpr std::array kListMethods = {"index", "count", "copy"};
constexpr std::array kListMutators = {"append", "extend",  "insert", "pop",
                                      "remove", "reverse", "sort",   "clear"};

template <size_t N>
bool one_of(const std::array<const char*, N>& names, std::string_view name) {
  for (const char* candidate : names) {
    if (name == candidate) return true;
  }
  return false;
}

Value dict_method(Runtime& runtime, std::string_view name, const Value& self,
                  const CallArgs& call) {
  if (name == "get") {
    BoundArgs args("dict.get", call, {"key", "default"});
    runtime.charge(self.entries().size());
    if (!args.has(0)) TIDAL_FAIL("dict.get needs a key");
    if (const Value* found = self.find(*args.get(0))) return *found;
    return args.has(1) ? *args.get(1) : Value::none();
  }
  BoundArgs args(cat("dict.", name), call, {});
  if (name == "copy") return self;
  runtime.charge(self.entries().size());
  std::vector<Value> out;
  out.reserve(self.entries().size());
  for (const auto& [key, value] : self.entries()) {
    if (name == "keys") {
      out.push_back(key);
    } else if (name == "values") {
      out.push_back(value);
    } else {
      out.push_back(Value::from_list({key, value}, true));
    }
  }
  return Value::from_list(std::move(out));
}

Value list_method(Runtime& runtime, std::string_view name, const Value& self,
                  const CallArgs& call) {
  runtime.charge(static_cast<size_t>(std::min<uint64_t>(self.weight(), uint64_t{1} << 40)));
  if (name == "copy") {
    BoundArgs args("list.copy", call, {});
    return self;
  }
  BoundArgs args(cat("list.", name), call, {"value"});
  if (!args.has(0)) TIDAL_FAIL(args.what(), " needs an argument");
  const auto& items = self.items();
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (equals(items[i], *args.get(0))) {
      if (name == "index") return Value::from_int(static_cast<int64_t>(i));
      ++count;
    }
  }
  if (name == "index") TIDAL_FAIL(repr(*args.get(0), 200), " is not in list");
  return Value::from_int(count);
}

Value bind_method(const Value& self, std::string_view name,
                  Value (*method)(Runtime&, std::string_view, const Value&, const CallArgs&)) {
  std::string method_name(name);
  return Value::from_function(cat(type_name(self), ".", name),
                              [self, method_name, method](Runtime& runtime, CallArgs& args) {
                                return method(runtime, method_name, self, args);
                              });
}

Value unsafe(const Value& self, std::string_view name) {
  return Value::undefined(
      cat("access to attribute '", name, "' of '", type_name(self), "' object is unsafe."));
}

}  // namespace

std::optional<Value> find_method(const Value& self, std::string_view name) {
  if (self.is_string()) {
    if (one_of(kStrMethods, name)) return bind_method(self, name, str_method);
    if (one_of(kStrUnsupported, name)) {
      return Value::undefined(cat("str method '", name, "' is not supported"));
    }
  } else if (self.is_dict()) {
    if (one_of(kDictMethods, name)) return bind_method(self, name, dict_method);
    if (one_of(kDictMutators, name)) return unsafe(self, name);
  } else if (self.is_list()) {
    if (one_of(kListMethods, name)) {
      return bind_method(self, name, list_method);
    }
    if (one_of(kListMutators, name)) return unsafe(self, name);
  }
  return std::nullopt;
}

std::vector<std::string> py_split(std::string_view text, const std::string* separator,
                                  int64_t max_split, bool from_right) {
  std::vector<std::string> parts;
  if (max_split < 0) max_split = INT64_MAX;
  if (separator != nullptr) {
    if (!from_right) {
      size_t start = 0;
      while (max_split-- > 0) {
        const size_t at = text.find(*separator, start);
        if (at == std::string_view::npos) break;
        parts.emplace_back(text.substr(start, at - start));
        start = at + separator->size();
      }
      parts.emplace_back(text.substr(start));
      return parts;
    }
    size_t end = text.size();
    while (max_split-- > 0 && end >= separator->size()) {
      const size_t at = text.rfind(*separator, end - separator->size());
      if (at == std::string_view::npos) break;
      parts.emplace_back(text.substr(at + separator->size(), end - at - separator->size()));
      end = at;
    }
    parts.emplace_back(text.substr(0, end));
    std::reverse(parts.begin(), parts.end());
    return parts;
  }
  // Whitespace splitting: runs of whitespace separate, and ends never yield empty parts.
  std::vector<std::pair<size_t, size_t>> words;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (is_space(next_code_point(text, next))) {
      pos = next;
      continue;
    }
    const size_t start = pos;
    while (pos < text.size()) {
      next = pos;
      if (is_space(next_code_point(text, next))) break;
      pos = next;
    }
    words.emplace_back(start, pos);
  }
  if (words.empty()) return parts;
  const auto total = static_cast<int64_t>(words.size());
  if (max_split >= total) {
    for (const auto& [start, end] : words) parts.emplace_back(text.substr(start, end - start));
    return parts;
  }
  if (!from_right) {
    for (int64_t i = 0; i < max_split; ++i) {
      const auto& [start, end] = words[static_cast<size_t>(i)];
      parts.emplace_back(text.substr(start, end - start));
    }
    // The remainder keeps its whitespace, except what separated it from the last split word.
    parts.emplace_back(text.substr(words[static_cast<size_t>(max_split)].first));
    return parts;
  }
  const size_t keep = words.size() - static_cast<size_t>(max_split);
  parts.emplace_back(text.substr(0, words[keep - 1].second));
  for (size_t i = keep; i < words.size(); ++i) {
    parts.emplace_back(text.substr(words[i].first, words[i].second - words[i].first));
  }
  return parts;
}

std::string py_replace(std::string_view text, std::string_view old_text, std::string_view new_text,
                       int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old_text.empty()) {
    size_t pos = 0;
    while (pos < text.size()) {
      if (count-- > 0) out += new_text;
      const size_t start = pos;
      next_code_point(text, pos);
      out.append(text.substr(start, pos - start));
    }
    if (count > 0) out += new_text;
    return out;
  }
  size_t start = 0;
  while (count-- > 0) {
    const size_t at = text.find(old_text, start);
    if (at == std::string_view::npos) break;
    out.append(text.substr(start, at - start));
    out += new_text;
    start = at + old_text.size();
  }
  out.append(text.substr(start));
  return out;
}

std::vector<std::string> py_splitlines(std::string_view text, bool keep_ends) {
  std::vector<std::string> lines;
  size_t start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t line_end = pos;
    const char32_t c = next_code_point(text, pos);
    if (!is_line_break(c)) continue;
    if (c == '\r' && pos < text.size() && text[pos] == '\n') ++pos;
    lines.emplace_back(text.substr(start, (keep_ends ? pos : line_end) - start));
    start = pos;
  }
  if (start < text.size()) lines.emplace_back(text.substr(start));
  return lines;
}

std::string py_title(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool previous_cased = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    char32_t mapped = c;
    if (previous_cased) {
      mapped = to_lower(c);
    } else if (c < 0x80) {
      mapped = to_upper(c);
    } else {
      mapped = to_title(c);
    }
    append_utf8(out, mapped);
    previous_cased = is_cased_letter(c);
  }
  return out;
}

std::string py_capitalize(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    if (first && c >= 0x80) {
      append_utf8(out, to_title(c));
    } else {
      append_utf8(out, first ? to_upper(c) : to_lower(c));
    }
    first = false;
  }
  return out;
}

}  // namespace tidal::jinja
