// The global functions templates can call: range, dict, namespace, and transformers'
// raise_exception and strftime_now.
#include "server/jinja/builtins.h"

#include <cmath>
#include <ctime>

#include "common/error.h"
#include "server/jinja/ops.h"
#include "server/jinja/py_format.h"
#include "server/jinja/runtime.h"

namespace tidal::jinja {
namespace {

// Jinja's sandbox refuses ranges longer than this (SandboxedEnvironment.MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

Value global_range(Runtime& runtime, CallArgs& call) {
  if (!call.keyword.empty()) TIDAL_FAIL("range() takes no keyword arguments");
  const auto& p = call.positional;
  if (p.empty() || p.size() > 3) TIDAL_FAIL("range expected 1 to 3 arguments, got ", p.size());
  for (const Value& v : p) {
    if (!v.is_integral())
      TIDAL_FAIL("'", type_name(v), "' object cannot be interpreted as an integer");
  }
  const int64_t start = p.size() == 1 ? 0 : p[0].as_int();
  const int64_t stop = p.size() == 1 ? p[0].as_int() : p[1].as_int();
  const int64_t step = p.size() == 3 ? p[2].as_int() : 1;
  if (step == 0) TIDAL_FAIL("range() arg 3 must not be zero");
  // Count in floating point first so extreme bounds cannot overflow.
  const double span =
      (static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step);
  if (span > static_cast<double>(kMaxRange)) {
    TIDAL_FAIL("Range too big. The sandbox blocks ranges larger than MAX_RANGE (", kMaxRange, ").");
  }
  std::vector<Value> items;
  if (span > 0) {
    const auto count = static_cast<int64_t>(std::ceil(span));
    runtime.charge(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) items.push_back(Value::from_int(start + i * step));
  }
  return Value::from_list(std::move(items));
}

// dict(mapping_or_pairs, **kwargs) and namespace(...): both take Python dict()'s arguments.
std::vector<std::pair<Value, Value>> dict_arguments(const char* what, const CallArgs& call) {
  if (call.positional.size() > 1) TIDAL_FAIL(what, " expected at most 1 positional argument");
  std::vector<std::pair<Value, Value>> entries;
  if (!call.positional.empty()) {
    const Value& source = call.positional[0];
    if (source.is_dict()) {
      entries = source.entries();
    } else {
      for (const Value& pair : iterate(source)) {
        const std::vector<Value> parts = iterate(pair);
        if (parts.size() != 2) TIDAL_FAIL(what, " sequence elements must have length 2");
        entries.emplace_back(parts[0], parts[1]);
      }
    }
  }
  for (const auto& [key, value] : call.keyword)
    entries.emplace_back(Value::from_string(key), value);
  return entries;
}

Value global_dict(Runtime&, CallArgs& call) {
  return Value::from_dict(dict_arguments("dict()", call));
}

Value global_namespace(Runtime& runtime, CallArgs& call) {
  const Value merged = Value::from_dict(dict_arguments("namespace()", call));
  std::vector<std::pair<std::string, Value>> attributes;
  for (const auto& [key, value] : merged.entries()) {
    if (!key.is_string()) TIDAL_FAIL("namespace attribute names must be strings");
    // transformers' TemplateNamespace refuses these to keep templates away from Python internals.
    if (key.as_string().starts_with("_")) {
      TIDAL_FAIL(
          "Chat templates cannot store underscore-prefixed attributes on a namespace, but got ",
          string_repr(key.as_string()), ".");
    }
    attributes.emplace_back(key.as_string(), value);
  }
  return runtime.make_namespace(std::move(attributes));
}

Value global_raise_exception(Runtime& runtime, CallArgs& call) {
  BoundArgs args("raise_exception", call, {"message"});
  throw TemplateRaised(args.has(0) ? to_str(*args.get(0), runtime.text_limit()) : "");
}

Value global_strftime_now(Runtime& runtime, CallArgs& call) {
  BoundArgs args("strftime_now", call, {"format"});
  const auto format = args.get_string(0);
  if (!format) TIDAL_FAIL("strftime_now needs a format string");
  if (format->empty()) return Value::from_string("");
  if (format->size() > 4096) TIDAL_FAIL("strftime_now format too long");
  const std::time_t now = runtime.now();
  std::tm local{};
  localtime_r(&now, &local);
  // strftime reports 0 both for "too small" and for an empty result; grow a few times, then
  // accept empty.
  for (size_t size = 256; size <= 65536; size *= 4) {
    std::string buffer(size, '\0');
    const size_t written = std::strftime(buffer.data(), buffer.size(), format->c_str(), &local);
    if (written > 0) {
      buffer.resize(written);
      return Value::from_string(std::move(buffer));
    }
  }
  return Value::from_string("");
}
}  // namespace

std::vector<std::pair<std::string, Value>> make_globals() {
  std::vector<std::pair<std::string, Value>> globals;
  globals.emplace_back("range", Value::from_function("range", global_range));
  globals.emplace_back("dict", Value::from_function("dict", global_dict));
  globals.emplace_back("namespace", Value::from_function("namespace", global_namespace));
  globals.emplace_back("raise_exception",
                       Value::from_function("raise_exception", global_raise_exception));
  globals.emplace_back("strftime_now", Value::from_function("strftime_now", global_strftime_now));
  return globals;
}

}  // namespace tidal::jinja
