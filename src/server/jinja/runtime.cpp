// State shared by one render and the builtins it calls: the work budget, the clock, and argument
// binding for native functions.
#include "server/jinja/runtime.h"

#include "server/jinja/ops.h"

namespace tidal::jinja {

Runtime::Runtime(const RenderLimits& limits, std::function<std::time_t()> clock)
    : limits_(limits), clock_(std::move(clock)) {}

Runtime::~Runtime() {
  // Emptying every namespace breaks reference cycles such as {% set ns.self = ns %}, and releases
  // chains of namespaces one link at a time rather than by deep recursion.
  for (const Value& ns : namespaces_) {
    std::vector<std::pair<std::string, Value>> attributes;
    attributes.swap(ns.attributes());
  }
}

void Runtime::fail_budget() const {
  TIDAL_FAIL("template did too much work (more than ", limits_.max_steps, " steps)");
}

Value Runtime::make_namespace(std::vector<std::pair<std::string, Value>> attributes) {
  Value ns = Value::new_namespace(std::move(attributes));
  namespaces_.push_back(ns);
  return ns;
}

Value Runtime::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) fail_undefined(callee);
  if (!callee.is_function()) TIDAL_FAIL("'", type_name(callee), "' object is not callable");
  return callee.function()(*this, args);
}

BoundArgs::BoundArgs(std::string_view what, const CallArgs& args,
                     std::initializer_list<const char*> names)
    : what_(what), names_(names), values_(names.size(), nullptr) {
  if (args.positional.size() > names_.size()) {
    TIDAL_FAIL(what_, " takes at most ", names_.size(), " argument(s), got ",
               args.positional.size());
  }
  for (size_t i = 0; i < args.positional.size(); ++i) values_[i] = &args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    bool found = false;
    for (size_t i = 0; i < names_.size(); ++i) {
      if (key == names_[i]) {
        if (values_[i] != nullptr)
          TIDAL_FAIL(what_, " got multiple values for argument '", key, "'");
        values_[i] = &value;
        found = true;
        break;
      }
    }
    if (!found) TIDAL_FAIL(what_, " got an unexpected keyword argument '", key, "'");
  }
}

int64_t BoundArgs::get_int(size_t index, int64_t fallback) const {
  const Value* value = values_[index];
  if (value == nullptr || value->is_none()) return fallback;
  if (!value->is_integral()) {
    TIDAL_FAIL(what_, " argument '", names_[index], "' must be an integer, not ",
               type_name(*value));
  }
  return value->as_int();
}

bool BoundArgs::get_bool(size_t index, bool fallback) const {
  const Value* value = values_[index];
  return value == nullptr ? fallback : truthy(*value);
}

std::optional<std::string> BoundArgs::get_string(size_t index) const {
  const Value* value = values_[index];
  if (value == nullptr || value->is_none()) return std::nullopt;
  if (!value->is_string()) {
    TIDAL_FAIL(what_, " argument '", names_[index], "' must be a string, not ", type_name(*value));
  }
  return value->as_string();
}

}  // namespace tidal::jinja
