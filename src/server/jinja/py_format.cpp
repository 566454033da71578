// Python's text forms of values: str(), repr() and json.dumps(), byte-exact with CPython.
#include "server/jinja/py_format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <system_error>

#include <utf8proc.h>

#include "common/error.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void check_limit(const std::string& out, size_t limit) {
  if (out.size() > limit) TIDAL_FAIL("text longer than the limit of ", limit, " bytes");
}

void append_hex(std::string& out, uint32_t value, int digits) {
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4)
    out.push_back(kHex[(value >> shift) & 0xF]);
}

// Python's str.isprintable, which decides what repr() escapes.
bool is_printable(char32_t c) {
  if (c < 0x80) return c >= 0x20 && c < 0x7F;
  if (c > 0x10FFFF) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

void append_repr(std::string& out, const Value& value, size_t limit, int depth);
void append_str_at(std::string& out, const Value& value, size_t limit, int depth);

void append_sequence(std::string& out, const Value& value, size_t limit, int depth) {
  const bool tuple = value.is_tuple();
  out.push_back(tuple ? '(' : '[');
  bool first = true;
  for (const Value& item : value.items()) {
    if (!first) out += ", ";
    first = false;
    append_repr(out, item, limit, depth + 1);
  }
  if (tuple && value.items().size() == 1) out.push_back(',');
  out.push_back(tuple ? ')' : ']');
}

void append_mapping(std::string& out, const std::vector<std::pair<Value, Value>>& entries,
                    size_t limit, int depth) {
  out.push_back('{');
  bool first = true;
  for (const auto& [key, item] : entries) {
    if (!first) out += ", ";
    first = false;
    append_repr(out, key, limit, depth + 1);
    out += ": ";
    append_repr(out, item, limit, depth + 1);
  }
  out.push_back('}');
}

void append_repr(std::string& out, const Value& value, size_t limit, int depth) {
  check_limit(out, limit);
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      out += "Undefined";
      return;
    case Value::Kind::kString:
      out += string_repr(value.as_string());
      return;
    default:
      append_str_at(out, value, limit, depth);
  }
}

void append_namespace(std::string& out, const Value& value, size_t limit, int depth) {
  out += "<Namespace {";
  bool first = true;
  for (const auto& [name, item] : value.attributes()) {
    if (!first) out += ", ";
    first = false;
    out += string_repr(name);
    out += ": ";
    append_repr(out, item, limit, depth + 1);
    check_limit(out, limit);
  }
  out += "}>";
}

void append_json_string(std::string& out, std::string_view text, bool ensure_ascii) {
  out.push_back('"');
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t c = next_code_point(text, pos);
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000 && c <= 0x10FFFF) {
        const uint32_t v = c - 0x10000;
        out += "\\u";
        append_hex(out, 0xD800 + (v >> 10), 4);
        out += "\\u";
        append_hex(out, 0xDC00 + (v & 0x3FF), 4);
      } else {
        out += "\\u";
        append_hex(out, c, 4);
      }
      continue;
    }
    out.append(text.substr(start, pos - start));
  }
  out.push_back('"');
}

class JsonWriter {
 public:
  JsonWriter(const JsonOptions& options, size_t limit) : options_(options), limit_(limit) {
    if (options.item_separator) {
      item_separator_ = *options.item_separator;
    } else {
      item_separator_ = options.indent ? "," : ", ";
    }
  }

  void write(std::string& out, const Value& value, int level) {
    check_limit(out, limit_);
    switch (value.kind()) {
      case Value::Kind::kNone:
        out += "null";
        return;
      case Value::Kind::kBool:
        out += value.as_bool() ? "true" : "false";
        return;
      case Value::Kind::kInt:
        out += std::to_string(value.as_int());
        return;
      case Value::Kind::kFloat:
        out += json_float(value.as_double());
        return;
      case Value::Kind::kString:
        append_json_string(out, value.as_string(), options_.ensure_ascii);
        return;
      case Value::Kind::kList:
        write_list(out, value, level);
        return;
      case Value::Kind::kDict:
        write_dict(out, value, level);
        return;
      default:
        TIDAL_FAIL("Object of type ", type_name(value), " is not JSON serializable");
    }
  }

 private:
  static std::string json_float(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
    return float_repr(value);
  }

  void newline(std::string& out, int level) {
    out.push_back('\n');
    for (int i = 0; i < level; ++i) out += *options_.indent;
  }

  void write_list(std::string& out, const Value& value, int level) {
    const auto& items = value.items();
    if (items.empty()) {
      out += "[]";
      return;
    }
    out.push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += item_separator_;
      if (options_.indent) newline(out, level + 1);
      write(out, items[i], level + 1);
    }
    if (options_.indent) newline(out, level);
    out.push_back(']');
  }

  static std::string key_text(const Value& key) {
    switch (key.kind()) {
      case Value::Kind::kString:
        return key.as_string();
      case Value::Kind::kNone:
        return "null";
      case Value::Kind::kBool:
        return key.as_bool() ? "true" : "false";
      case Value::Kind::kInt:
        return std::to_string(key.as_int());
      case Value::Kind::kFloat:
        return json_float(key.as_double());
      default:
        TIDAL_FAIL("keys must be str, int, float, bool or None, not ", type_name(key));
    }
  }

  void write_dict(std::string& out, const Value& value, int level) {
    const auto& entries = value.entries();
    if (entries.empty()) {
      out += "{}";
      return;
    }
    std::vector<std::pair<std::string, const Value*>> keyed;
    keyed.reserve(entries.size());
    for (const auto& [key, item] : entries) keyed.emplace_back(key_text(key), &item);
    if (options_.sort_keys) {
      for (const auto& [key, item] : entries) {
        if (!key.is_string()) TIDAL_FAIL("sort_keys needs string keys, got ", type_name(key));
      }
      std::stable_sort(keyed.begin(), keyed.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    out.push_back('{');
    for (size_t i = 0; i < keyed.size(); ++i) {
      if (i > 0) out += item_separator_;
      if (options_.indent) newline(out, level + 1);
      append_json_string(out, keyed[i].first, options_.ensure_ascii);
      out += options_.key_separator;
      write(out, *keyed[i].second, level + 1);
    }
    if (options_.indent) newline(out, level);
    out.push_back('}');
  }

  const JsonOptions& options_;
  size_t limit_;
  std::string item_separator_;
};

}  // namespace

std::string float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return std::signbit(value) ? "-0.0" : "0.0";
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const std::string_view text(buffer, static_cast<size_t>(result.ptr - buffer));
  // Shortest round-trip digits as d.ddde±x; re-laid out the way Python's repr does.
  const size_t e = text.find('e');
  std::string_view mantissa = text.substr(0, e);
  const bool negative = mantissa.front() == '-';
  if (negative) mantissa.remove_prefix(1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = 0;
  std::string_view exponent_text = text.substr(e + 1);
  if (exponent_text.front() == '+') exponent_text.remove_prefix(1);
  std::from_chars(exponent_text.data(), exponent_text.data() + exponent_text.size(), exponent);
  const int point = exponent + 1;  // digits before the decimal point in positional notation
  const int count = static_cast<int>(digits.size());
  std::string out = negative ? "-" : "";
  if (point > -4 && point <= 16) {
    if (point <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-point), '0');
      out += digits;
    } else if (point >= count) {
      out += digits;
      out.append(static_cast<size_t>(point - count), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(point));
      out.push_back('.');
      out += digits.substr(static_cast<size_t>(point));
    }
  } else {
    out.push_back(digits[0]);
    if (count > 1) {
      out.push_back('.');
      out += digits.substr(1);
    }
    out.push_back('e');
    out.push_back(exponent < 0 ? '-' : '+');
    const int magnitude = exponent < 0 ? -exponent : exponent;
    if (magnitude < 10) out.push_back('0');
    out += std::to_string(magnitude);
  }
  return out;
}

std::string string_repr(std::string_view text) {
  const bool has_single = text.find('\'') != std::string_view::npos;
  const bool has_double = text.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t c = next_code_point(text, pos);
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (is_printable(c)) {
      out.append(text.substr(start, pos - start));
    } else if (c < 0x100) {
      out += "\\x";
      append_hex(out, c, 2);
    } else if (c < 0x10000) {
      out += "\\u";
      append_hex(out, c, 4);
    } else {
      out += "\\U";
      append_hex(out, c, 8);
    }
  }
  out.push_back(quote);
  return out;
}

namespace {

// Namespaces can contain themselves, so printing counts its depth rather than trusting
// kMaxValueDepth.
void append_str_at(std::string& out, const Value& value, size_t limit, int depth) {
  if (depth > 2 * kMaxValueDepth) TIDAL_FAIL("value nested too deeply to print");
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      break;
    case Value::Kind::kNone:
      out += "None";
      break;
    case Value::Kind::kBool:
      out += value.as_bool() ? "True" : "False";
      break;
    case Value::Kind::kInt:
      out += std::to_string(value.as_int());
      break;
    case Value::Kind::kFloat:
      out += float_repr(value.as_double());
      break;
    case Value::Kind::kString:
      out += value.as_string();
      break;
    case Value::Kind::kList:
      append_sequence(out, value, limit, depth);
      break;
    case Value::Kind::kDict:
      append_mapping(out, value.entries(), limit, depth);
      break;
    case Value::Kind::kNamespace:
      append_namespace(out, value, limit, depth);
      break;
    case Value::Kind::kFunction:
      out += "<function ";
      out += value.function_name();
      out += ">";
      break;
  }
  check_limit(out, limit);
}

}  // namespace

void append_str(std::string& out, const Value& value, size_t limit) {
  append_str_at(out, value, limit, 0);
}

std::string to_str(const Value& value, size_t limit) {
  std::string out;
  append_str(out, value, limit);
  return out;
}

std::string repr(const Value& value, size_t limit) {
  std::string out;
  append_repr(out, value, limit, 0);
  check_limit(out, limit);
  return out;
}

std::string to_json(const Value& value, const JsonOptions& options, size_t limit) {
  std::string out;
  JsonWriter(options, limit).write(out, value, 0);
  check_limit(out, limit);
  return out;
}

}  // namespace tidal::jinja
