// Jinja's filters (`x | name(args)`), with transformers' tojson in place of Jinja's own.
#include "server/jinja/builtins.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "server/jinja/methods.h"
#include "server/jinja/ops.h"
#include "server/jinja/py_format.h"
#include "server/jinja/runtime.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

// Stable merge sort that stays in bounds even when `less` is not a strict weak ordering (NaN,
// mixed types), unlike std::sort. Python's sort is stable too, so results match.
template <typename Less>
void merge_sort(std::vector<Value>& items, Less less) {
  std::vector<Value> buffer(items.size());
  for (size_t width = 1; width < items.size(); width *= 2) {
    for (size_t left = 0; left < items.size(); left += 2 * width) {
      const size_t middle = std::min(left + width, items.size());
      const size_t right = std::min(left + 2 * width, items.size());
      size_t i = left;
      size_t j = middle;
      size_t k = left;
      while (i < middle && j < right)
        buffer[k++] = less(items[j], items[i]) ? items[j++] : items[i++];
      while (i < middle) buffer[k++] = items[i++];
      while (j < right) buffer[k++] = items[j++];
    }
    items.swap(buffer);
  }
}

std::string text_of(Runtime& runtime, const Value& value) {
  return to_str(value, runtime.text_limit());
}

Value text_value(Runtime& runtime, std::string text) {
  runtime.charge(text.size());
  return Value::from_string(std::move(text));
}

// Jinja's make_attrgetter: "a.b.0" looks up a, then b, then item 0.
Value lookup_path(Runtime& runtime, const Value& item, const Value& path) {
  runtime.charge(item.is_dict() ? item.entries().size() : 1);
  if (!path.is_string()) return get_item(item, path);
  Value current = item;
  const std::string& text = path.as_string();
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    const std::string part =
        text.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty();
    for (char c : part) digits = digits && c >= '0' && c <= '9';
    if (digits && part.size() < 18) {
      current = get_item(current, Value::from_int(std::stoll(part)));
    } else {
      current = get_item(current, Value::from_string(part));
    }
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

Value lower_if_string(const Value& value) {
  return value.is_string() ? Value::from_string(lower(value.as_string())) : value;
}

Value filter_abs(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'abs'", call, {});
  if (input.is_integral()) {
    if (input.as_int() == INT64_MIN) TIDAL_FAIL("integer overflow");
    return Value::from_int(std::llabs(input.as_int()));
  }
  if (input.is_float()) return Value::from_float(std::fabs(input.as_double()));
  if (input.is_undefined()) fail_undefined(input);
  TIDAL_FAIL("bad operand type for abs(): '", type_name(input), "'");
}

Value filter_attr(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'attr'", call, {"name"});
  const auto name = args.get_string(0);
  if (!name) TIDAL_FAIL("filter 'attr' needs an attribute name");
  if (input.is_undefined()) fail_undefined(input);
  if (auto method = find_method(input, *name)) return *method;
  if (input.is_namespace()) return get_attr(input, *name);
  return Value::undefined(cat("'", type_name(input), " object' has no attribute '", *name, "'"));
}

Value filter_capitalize(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'capitalize'", call, {});
  return text_value(runtime, py_capitalize(text_of(runtime, input)));
}

Value filter_default(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'default'", call, {"default_value", "boolean"});
  if (input.is_undefined() || (args.get_bool(1, false) && !truthy(input))) {
    return args.has(0) ? *args.get(0) : Value::from_string("");
  }
  return input;
}

Value filter_dictsort(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'dictsort'", call, {"case_sensitive", "by", "reverse"});
  if (!input.is_dict()) TIDAL_FAIL("filter 'dictsort' needs a mapping, got ", type_name(input));
  const bool case_sensitive = args.get_bool(0, false);
  const std::string by = args.get_string(1).value_or("key");
  if (by != "key" && by != "value") TIDAL_FAIL("You can only sort by either 'key' or 'value'");
  const bool reverse = args.get_bool(2, false);
  const size_t position = by == "key" ? 0 : 1;
  std::vector<Value> pairs;
  for (const auto& [key, value] : input.entries())
    pairs.push_back(Value::from_list({key, value}, true));
  runtime.charge(pairs.size() * 8);
  merge_sort(pairs, [&](const Value& a, const Value& b) {
    Value x = a.items()[position];
    Value y = b.items()[position];
    if (!case_sensitive) {
      x = lower_if_string(x);
      y = lower_if_string(y);
    }
    return reverse ? less_than(y, x) : less_than(x, y);
  });
  return Value::from_list(std::move(pairs));
}

Value filter_escape(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'escape'", call, {});
  std::string out;
  for (char c : text_of(runtime, input)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return text_value(runtime, std::move(out));
}

Value filter_first(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'first'", call, {});
  if (input.is_list()) {
    if (!input.items().empty()) return input.items().front();
  } else if (input.is_dict()) {
    if (!input.entries().empty()) return input.entries().front().first;
  } else {
    std::vector<Value> items = iterate(input);
    if (!items.empty()) return items.front();
  }
  return Value::undefined("No first item, sequence was empty.");
}

Value filter_last(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'last'", call, {});
  if (input.is_list()) {
    if (!input.items().empty()) return input.items().back();
  } else if (input.is_dict()) {
    if (!input.entries().empty()) return input.entries().back().first;
  } else {
    std::vector<Value> items = iterate(input);
    if (!items.empty()) return items.back();
  }
  return Value::undefined("No last item, sequence was empty.");
}

// Python's float(str): surrounding whitespace, underscores between digits, inf and nan.
bool parse_float(std::string_view text, double& out) {
  text = strip(text, nullptr, true, true);
  std::string cleaned;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '_') {
      const bool between = i > 0 && i + 1 < text.size() &&
                           std::isdigit(static_cast<unsigned char>(text[i - 1])) &&
                           std::isdigit(static_cast<unsigned char>(text[i + 1]));
      if (!between) return false;
      continue;
    }
    cleaned.push_back(text[i]);
  }
  if (cleaned.empty()) return false;
  std::string lowered = lower(cleaned);
  std::string_view body = lowered;
  const bool negative = !body.empty() && body.front() == '-';
  if (!body.empty() && (body.front() == '-' || body.front() == '+')) body.remove_prefix(1);
  if (body == "inf" || body == "infinity") {
    out = negative ? -INFINITY : INFINITY;
    return true;
  }
  if (body == "nan") {
    out = NAN;
    return true;
  }
  // strtod also takes hex floats and "infinite" spellings Python refuses.
  for (char c : body) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' ||
          c == '-')) {
      return false;
    }
  }
  char* end = nullptr;
  out = std::strtod(cleaned.c_str(), &end);
  return end == cleaned.c_str() + cleaned.size();
}

// Python's int(str, base) for bases 2 to 36.
bool parse_int(std::string_view text, int64_t base, int64_t& out) {
  text = strip(text, nullptr, true, true);
  bool negative = false;
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (text.size() > 1 && text[0] == '0') {
    const char prefix = static_cast<char>(text[1] | 0x20);
    if ((prefix == 'x' && base == 16) || (prefix == 'o' && base == 8) ||
        (prefix == 'b' && base == 2)) {
      text.remove_prefix(2);
      if (!text.empty() && text.front() == '_') text.remove_prefix(1);
    }
  }
  if (text.empty()) return false;
  uint64_t value = 0;
  bool previous_digit = false;
  for (char c : text) {
    if (c == '_') {
      if (!previous_digit) return false;
      previous_digit = false;
      continue;
    }
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'z') digit = c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') digit = c - 'A' + 10;
    if (digit < 0 || digit >= base) return false;
    if (value > (static_cast<uint64_t>(INT64_MAX) - static_cast<uint64_t>(digit)) /
                    static_cast<uint64_t>(base)) {
      TIDAL_FAIL("integer too large");
    }
    value = value * static_cast<uint64_t>(base) + static_cast<uint64_t>(digit);
    previous_digit = true;
  }
  if (!previous_digit) return false;
  out = negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  return true;
}

Value filter_float(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'float'", call, {"default"});
  if (input.is_number()) return Value::from_float(input.as_double());
  double parsed = 0;
  if (input.is_string() && parse_float(input.as_string(), parsed)) return Value::from_float(parsed);
  return args.has(0) ? *args.get(0) : Value::from_float(0.0);
}

Value filter_int(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'int'", call, {"default", "base"});
  const Value fallback = args.has(0) ? *args.get(0) : Value::from_int(0);
  if (input.is_integral()) return Value::from_int(input.as_int());
  double number = 0;
  if (input.is_string()) {
    const int64_t base = args.get_int(1, 10);
    if (base < 2 || base > 36) TIDAL_FAIL("int() base must be >= 2 and <= 36");
    int64_t parsed = 0;
    if (parse_int(input.as_string(), base, parsed)) return Value::from_int(parsed);
    if (!parse_float(input.as_string(), number)) return fallback;
  } else if (input.is_float()) {
    number = input.as_double();
  } else {
    return fallback;
  }
  if (!std::isfinite(number) || std::fabs(number) >= 9.2e18) return fallback;
  return Value::from_int(static_cast<int64_t>(std::trunc(number)));
}

Value filter_format(Runtime& runtime, const Value& input, const CallArgs& call) {
  if (!call.keyword.empty() && !call.positional.empty()) {
    TIDAL_FAIL("filter 'format' takes positional or keyword arguments, not both");
  }
  Value args;
  if (!call.keyword.empty()) {
    std::vector<std::pair<Value, Value>> entries;
    for (const auto& [key, value] : call.keyword)
      entries.emplace_back(Value::from_string(key), value);
    args = Value::from_dict(std::move(entries));
  } else {
    args = Value::from_list(call.positional, true);
  }
  return text_value(runtime, percent_format(runtime, text_of(runtime, input), args));
}

Value filter_indent(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'indent'", call, {"width", "first", "blank"});
  std::string indentation;
  if (args.has(0) && args.get(0)->is_string()) {
    indentation = args.get(0)->as_string();
  } else {
    const int64_t width = args.get_int(0, 4);
    if (width > 0) {
      if (static_cast<uint64_t>(width) > runtime.text_limit()) TIDAL_FAIL("indent width too large");
      indentation.assign(static_cast<size_t>(width), ' ');
    }
  }
  const bool first = args.get_bool(1, false);
  const bool blank = args.get_bool(2, false);
  // Jinja appends a newline first so that splitlines keeps a trailing empty line.
  const std::vector<std::string> lines = py_splitlines(text_of(runtime, input) + "\n", false);
  const size_t estimate = lines.size() * (indentation.size() + 1);
  if (estimate > runtime.text_limit()) TIDAL_FAIL("indented text too long");
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    if (i > 0 && (blank || !lines[i].empty())) out += indentation;
    out += lines[i];
  }
  if (first) out = indentation + out;
  return text_value(runtime, std::move(out));
}

Value filter_items(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'items'", call, {});
  if (input.is_undefined()) return Value::from_list({});
  if (!input.is_dict()) TIDAL_FAIL("Can only get item pairs from a mapping.");
  runtime.charge(input.entries().size());
  std::vector<Value> pairs;
  for (const auto& [key, value] : input.entries())
    pairs.push_back(Value::from_list({key, value}, true));
  return Value::from_list(std::move(pairs));
}

Value filter_join(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'join'", call, {"d", "attribute"});
  const std::string separator = args.has(0) ? text_of(runtime, *args.get(0)) : "";
  std::string out;
  bool first = true;
  for (const Value& item : iterate(input)) {
    if (!first) out += separator;
    first = false;
    append_str(out, args.has(1) ? lookup_path(runtime, item, *args.get(1)) : item,
               runtime.text_limit());
    if (out.size() > runtime.text_limit()) TIDAL_FAIL("joined text too long");
  }
  return text_value(runtime, std::move(out));
}

Value filter_length(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'length'", call, {});
  return Value::from_int(static_cast<int64_t>(length(input)));
}

Value filter_list(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'list'", call, {});
  std::vector<Value> items = iterate(input);
  runtime.charge(items.size());
  return Value::from_list(std::move(items));
}

Value filter_lower(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'lower'", call, {});
  return text_value(runtime, lower(text_of(runtime, input)));
}

Value filter_upper(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'upper'", call, {});
  return text_value(runtime, upper(text_of(runtime, input)));
}

Value apply_filter(Runtime& runtime, const Value& name, const Value& input, const CallArgs& args) {
  if (!name.is_string()) TIDAL_FAIL("filter name must be a string");
  const FilterFunction filter = find_filter(name.as_string());
  if (filter == nullptr) TIDAL_FAIL("No filter named '", name.as_string(), "'.");
  return filter(runtime, input, args);
}

bool apply_test(Runtime& runtime, const Value& name, const Value& input, const CallArgs& args) {
  if (!name.is_string()) TIDAL_FAIL("test name must be a string");
  const TestFunction test = find_test(name.as_string());
  if (test == nullptr) TIDAL_FAIL("No test named '", name.as_string(), "'.");
  return test(runtime, input, args);
}

Value filter_map(Runtime& runtime, const Value& input, const CallArgs& call) {
  std::vector<Value> out;
  const std::vector<Value> items = truthy(input) ? iterate(input) : std::vector<Value>{};
  runtime.charge(items.size());
  if (call.positional.empty()) {
    BoundArgs args("filter 'map'", call, {"attribute", "default"});
    if (!args.has(0)) TIDAL_FAIL("map requires a filter argument");
    for (const Value& item : items) {
      Value value = lookup_path(runtime, item, *args.get(0));
      if (value.is_undefined() && args.has(1) && !args.get(1)->is_none()) value = *args.get(1);
      out.push_back(std::move(value));
    }
    return Value::from_list(std::move(out));
  }
  CallArgs rest;
  rest.positional.assign(call.positional.begin() + 1, call.positional.end());
  rest.keyword = call.keyword;
  for (const Value& item : items)
    out.push_back(apply_filter(runtime, call.positional[0], item, rest));
  return Value::from_list(std::move(out));
}

// select, reject, selectattr and rejectattr.
Value select_items(Runtime& runtime, const Value& input, const CallArgs& call, bool by_attribute,
                   bool keep_when) {
  size_t offset = 0;
  if (by_attribute) {
    if (call.positional.empty()) TIDAL_FAIL("Missing parameter for attribute name");
    offset = 1;
  }
  CallArgs rest;
  if (call.positional.size() > offset + 1) {
    rest.positional.assign(call.positional.begin() + static_cast<ptrdiff_t>(offset + 1),
                           call.positional.end());
  }
  rest.keyword = call.keyword;
  const std::vector<Value> items = iterate(input);
  runtime.charge(items.size());
  std::vector<Value> out;
  for (const Value& item : items) {
    const Value subject = by_attribute ? lookup_path(runtime, item, call.positional[0]) : item;
    const bool passed = call.positional.size() > offset
                            ? apply_test(runtime, call.positional[offset], subject, rest)
                            : truthy(subject);
    if (passed == keep_when) out.push_back(item);
  }
  return Value::from_list(std::move(out));
}

Value filter_select(Runtime& r, const Value& v, const CallArgs& a) {
  return select_items(r, v, a, false, true);
}
Value filter_reject(Runtime& r, const Value& v, const CallArgs& a) {
  return select_items(r, v, a, false, false);
}
Value filter_selectattr(Runtime& r, const Value& v, const CallArgs& a) {
  return select_items(r, v, a, true, true);
}
Value filter_rejectattr(Runtime& r, const Value& v, const CallArgs& a) {
  return select_items(r, v, a, true, false);
}

Value min_or_max(Runtime& runtime, const Value& input, const CallArgs& call, bool want_max) {
  BoundArgs args(want_max ? "filter 'max'" : "filter 'min'", call, {"case_sensitive", "attribute"});
  const bool case_sensitive = args.get_bool(0, false);
  const std::vector<Value> items = iterate(input);
  runtime.charge(static_cast<size_t>(std::min<uint64_t>(input.weight(), uint64_t{1} << 40)));
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& item) {
    Value k = args.has(1) ? lookup_path(runtime, item, *args.get(1)) : item;
    return case_sensitive ? k : lower_if_string(k);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (want_max ? less_than(best_key, k) : less_than(k, best_key)) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

Value filter_max(Runtime& r, const Value& v, const CallArgs& a) {
  return min_or_max(r, v, a, true);
}
Value filter_min(Runtime& r, const Value& v, const CallArgs& a) {
  return min_or_max(r, v, a, false);
}

Value filter_replace(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'replace'", call, {"old", "new", "count"});
  if (!args.has(0) || !args.has(1)) TIDAL_FAIL("filter 'replace' needs old and new strings");
  const std::string text = text_of(runtime, input);
  const std::string old_text = text_of(runtime, *args.get(0));
  const std::string new_text = text_of(runtime, *args.get(1));
  const size_t pieces =
      old_text.empty() ? code_point_count(text) + 1 : text.size() / old_text.size() + 1;
  if (!new_text.empty() && pieces > runtime.text_limit() / new_text.size()) {
    TIDAL_FAIL("replaced text longer than the limit of ", runtime.text_limit(), " bytes");
  }
  return text_value(runtime, py_replace(text, old_text, new_text, args.get_int(2, -1)));
}

Value filter_reverse(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'reverse'", call, {});
  if (input.is_string()) {
    const std::string& text = input.as_string();
    const auto offsets = code_point_offsets(text);
    std::string out;
    out.reserve(text.size());
    for (size_t i = offsets.size() - 1; i > 0; --i)
      out.append(text, offsets[i - 1], offsets[i] - offsets[i - 1]);
    return text_value(runtime, std::move(out));
  }
  std::vector<Value> items = iterate(input);
  runtime.charge(items.size());
  std::reverse(items.begin(), items.end());
  return Value::from_list(std::move(items));
}

Value filter_round(Runtime&, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'round'", call, {"precision", "method"});
  const int64_t precision = args.get_int(0, 0);
  const std::string method = args.get_string(1).value_or("common");
  if (method != "common" && method != "ceil" && method != "floor") {
    TIDAL_FAIL("method must be 'common', 'ceil' or 'floor'");
  }
  if (!input.is_number()) TIDAL_FAIL("filter 'round' needs a number, got ", type_name(input));
  if (precision < -300 || precision > 300) TIDAL_FAIL("round precision out of range");
  if (method == "common") {
    // Python's round(int, n) stays an int; round(float, n) rounds the exact binary value half to
    // even, which is what printf's correctly rounded conversion does.
    if (input.is_integral() && precision >= 0) return Value::from_int(input.as_int());
    const double x = input.as_double();
    if (!std::isfinite(x)) return Value::from_float(x);
    if (precision >= 0) {
      char buffer[512];
      std::snprintf(buffer, sizeof(buffer), "%.*f", static_cast<int>(precision), x);
      return Value::from_float(std::strtod(buffer, nullptr));
    }
    const double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value::from_float(std::nearbyint(x / scale) * scale);
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double scaled = input.as_double() * scale;
  return Value::from_float((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

Value filter_safe(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'safe'", call, {});
  return text_value(runtime, text_of(runtime, input));
}

Value filter_sort(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'sort'", call, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = args.get_bool(0, false);
  const bool case_sensitive = args.get_bool(1, false);
  std::vector<Value> items = iterate(input);
  // n log n comparisons, each as costly as the elements compared.
  runtime.charge(static_cast<size_t>(std::min<uint64_t>(input.weight(), uint64_t{1} << 40) *
                                     (std::bit_width(items.size()) + 1)));
  auto key = [&](const Value& item) {
    Value k =
        args.has(2) && !args.get(2)->is_none() ? lookup_path(runtime, item, *args.get(2)) : item;
    return case_sensitive ? k : lower_if_string(k);
  };
  merge_sort(items, [&](const Value& a, const Value& b) {
    return reverse ? less_than(key(b), key(a)) : less_than(key(a), key(b));
  });
  return Value::from_list(std::move(items));
}

Value filter_string(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'string'", call, {});
  if (input.is_string()) return input;
  return text_value(runtime, text_of(runtime, input));
}

Value filter_sum(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'sum'", call, {"attribute", "start"});
  Value total = args.has(1) ? *args.get(1) : Value::from_int(0);
  for (const Value& item : iterate(input)) {
    total = binary_op(
        runtime, BinaryOp::kAdd, total,
        args.has(0) && !args.get(0)->is_none() ? lookup_path(runtime, item, *args.get(0)) : item);
  }
  return total;
}

// Jinja's title filter capitalizes after spaces, dashes and opening brackets, unlike str.title.
Value filter_title(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'title'", call, {});
  const std::string text = text_of(runtime, input);
  std::string out;
  bool word_start = true;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    const bool separator = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_space(c);
    if (separator) {
      append_utf8(out, c);
      word_start = true;
    } else {
      append_utf8(out, word_start ? to_upper(c) : to_lower(c));
      word_start = false;
    }
  }
  return text_value(runtime, std::move(out));
}

// transformers replaces Jinja's tojson with json.dumps(x, ensure_ascii=False, indent=...,
// separators=..., sort_keys=...), which neither escapes HTML nor sorts keys.
Value filter_tojson(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'tojson'", call, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions options;
  options.ensure_ascii = args.get_bool(0, false);
  if (args.has(1) && !args.get(1)->is_none()) {
    const Value& indent = *args.get(1);
    if (indent.is_string()) {
      options.indent = indent.as_string();
    } else if (indent.is_integral()) {
      const int64_t width = indent.as_int();
      if (width > 1000) TIDAL_FAIL("tojson indent too large");
      options.indent = std::string(width > 0 ? static_cast<size_t>(width) : 0, ' ');
    } else {
      TIDAL_FAIL("tojson indent must be an integer or a string");
    }
  }
  if (args.has(2) && !args.get(2)->is_none()) {
    const Value& separators = *args.get(2);
    if (!separators.is_list() || separators.items().size() != 2 ||
        !separators.items()[0].is_string() || !separators.items()[1].is_string()) {
      TIDAL_FAIL("tojson separators must be a pair of strings");
    }
    options.item_separator = separators.items()[0].as_string();
    options.key_separator = separators.items()[1].as_string();
  }
  options.sort_keys = args.get_bool(3, false);
  return text_value(runtime, to_json(input, options, runtime.text_limit()));
}

Value filter_trim(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'trim'", call, {"chars"});
  const std::optional<std::string> chars = args.get_string(0);
  const std::string text = text_of(runtime, input);
  return text_value(runtime, std::string(strip(text, chars ? &*chars : nullptr, true, true)));
}

Value filter_unique(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'unique'", call, {"case_sensitive", "attribute"});
  const bool case_sensitive = args.get_bool(0, false);
  const std::vector<Value> items = iterate(input);
  std::vector<Value> out;
  std::vector<Value> seen;
  for (const Value& item : items) {
    Value k =
        args.has(1) && !args.get(1)->is_none() ? lookup_path(runtime, item, *args.get(1)) : item;
    if (!case_sensitive) k = lower_if_string(k);
    runtime.charge(seen.size() + 1);
    bool duplicate = false;
    for (const Value& s : seen) {
      if (equals(s, k)) {
        duplicate = true;
        break;
      }
    }
    if (!duplicate) {
      seen.push_back(std::move(k));
      out.push_back(item);
    }
  }
  return Value::from_list(std::move(out));
}

Value filter_wordcount(Runtime& runtime, const Value& input, const CallArgs& call) {
  BoundArgs args("filter 'wordcount'", call, {});
  const std::string text = text_of(runtime, input);
  int64_t count = 0;
  bool in_word = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    const bool word = is_alpha(c) || is_digit(c) || c == '_';
    if (word && !in_word) ++count;
    in_word = word;
  }
  return Value::from_int(count);
}

struct NamedFilter {
  const char* name;
  FilterFunction function;
};

constexpr NamedFilter kFilters[] = {
    {"abs", filter_abs},
    {"attr", filter_attr},
    {"capitalize", filter_capitalize},
    {"count", filter_length},
    {"d", filter_default},
    {"default", filter_default},
    {"dictsort", filter_dictsort},
    {"e", filter_escape},
    {"escape", filter_escape},
    {"first", filter_first},
    {"float", filter_float},
    {"forceescape", filter_escape},
    {"format", filter_format},
    {"indent", filter_indent},
    {"int", filter_int},
    {"items", filter_items},
    {"join", filter_join},
    {"last", filter_last},
    {"length", filter_length},
    {"list", filter_list},
    {"lower", filter_lower},
    {"map", filter_map},
    {"max", filter_max},
    {"min", filter_min},
    {"reject", filter_reject},
    {"rejectattr", filter_rejectattr},
    {"replace", filter_replace},
    {"reverse", filter_reverse},
    {"round", filter_round},
    {"safe", filter_safe},
    {"select", filter_select},
    {"selectattr", filter_selectattr},
    {"sort", filter_sort},
    {"string", filter_string},
    {"sum", filter_sum},
    {"title", filter_title},
    {"tojson", filter_tojson},
    {"trim", filter_trim},
    {"unique", filter_unique},
    {"upper", filter_upper},
    {"wordcount", filter_wordcount},
};
}  // namespace

FilterFunction find_filter(std::string_view name) {
  for (const NamedFilter& filter : kFilters) {
    if (name == filter.name) return filter.function;
  }
  return nullptr;
}

}  // namespace tidal::jinja
