// State shared by one render and the builtins it calls: the work budget, the clock, and argument
// binding for native functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "server/jinja/value.h"

namespace tidal::jinja {

// raise_exception(message) in a template: the message passes to the caller unchanged.
class TemplateRaised : public Error {
 public:
  using Error::Error;
};

// An error that already names the place in the template where it happened.
class LocatedError : public Error {
 public:
  using Error::Error;
};

// Bounds on one render. Untrusted templates must not be able to hang or exhaust the server, so
// every loop iteration, evaluated node and produced byte is paid for out of `max_steps`.
struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;
  int64_t max_steps = 200'000'000;
  // Nested evaluation: statements, expressions and macro calls together. Templates that recurse
  // through JSON schemas in macros need a few hundred.
  int max_depth = 500;
};

class Runtime {
 public:
  Runtime(const RenderLimits& limits, std::function<std::time_t()> clock);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const RenderLimits& limits() const { return limits_; }
  size_t text_limit() const { return limits_.max_output_bytes; }
  // Throws tidal::Error once the render has done more work than limits().max_steps allows.
  void charge(size_t units) {
    steps_ +=
        static_cast<int64_t>(units > static_cast<size_t>(INT64_MAX / 2) ? INT64_MAX / 2 : units);
    if (steps_ > limits_.max_steps) fail_budget();
  }
  std::time_t now() const { return clock_ ? clock_() : std::time(nullptr); }

  // Namespaces are remembered so the render can cut reference cycles (ns.self = ns) when it ends.
  Value make_namespace(std::vector<std::pair<std::string, Value>> attributes);

  // Calls a function value; anything else fails the way Python would.
  Value call(const Value& callee, CallArgs& args);

 private:
  [[noreturn]] void fail_budget() const;

  RenderLimits limits_;
  std::function<std::time_t()> clock_;
  int64_t steps_ = 0;
  std::vector<Value> namespaces_;
};

// Binds CallArgs to a native function's Python-style parameter list.
class BoundArgs {
 public:
  // Throws when there are more positional arguments than names, or an unknown keyword.
  BoundArgs(std::string_view what, const CallArgs& args, std::initializer_list<const char*> names);

  // nullptr when the argument was not given.
  const Value* get(size_t index) const { return values_[index]; }
  bool has(size_t index) const { return values_[index] != nullptr; }
  int64_t get_int(size_t index, int64_t fallback) const;
  bool get_bool(size_t index, bool fallback) const;  // Python truthiness
  // Requires a string when given.
  std::optional<std::string> get_string(size_t index) const;
  const std::string& what() const { return what_; }

 private:
  std::string what_;
  std::vector<const char*> names_;
  std::vector<const Value*> values_;
};

}  // namespace tidal::jinja
