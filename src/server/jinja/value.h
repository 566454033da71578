// The dynamic values a template computes with, modelled on the Python objects Jinja hands around.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tidal::jinja {

class Value;
class Runtime;

// Arguments of a call, filter or test as written: positional first, then name=value pairs.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFunction = std::function<Value(Runtime&, CallArgs&)>;

// Containers nest at most this deep, so every recursive walk over a value (printing, JSON,
// comparison, destruction) has a bounded stack.
inline constexpr int kMaxValueDepth = 200;

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kFunction,
  };

  Value() = default;  // undefined, with no name to report
  static Value undefined(std::string hint);
  static Value none();
  static Value from_bool(bool value);
  static Value from_int(int64_t value);
  static Value from_float(double value);
  static Value from_string(std::string value);
  static Value from_list(std::vector<Value> items, bool tuple = false);
  // Later duplicates of a key replace the earlier value in the earlier position, as in Python.
  static Value from_dict(std::vector<std::pair<Value, Value>> items);
  // Skips from_dict's duplicate search: the keys must already be distinct strings.
  static Value from_unique_dict(std::vector<std::pair<Value, Value>> entries);
  static Value new_namespace(std::vector<std::pair<std::string, Value>> attributes);
  static Value from_function(std::string name, NativeFunction function);
  // Throws tidal::Error when nested deeper than kMaxValueDepth.
  static Value from_json(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // Python bools are ints: True + 1 == 2.
  bool is_integral() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }
  bool is_number() const { return is_integral() || is_float(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return scalar_.b; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (scalar_.b ? 1 : 0) : scalar_.i; }
  double as_double() const;
  const std::string& as_string() const;
  const std::vector<Value>& items() const;  // list or tuple elements
  bool is_tuple() const;
  const std::vector<std::pair<Value, Value>>& entries() const;  // dict entries in order
  // Namespace attributes; mutable through every copy of the value.
  std::vector<std::pair<std::string, Value>>& attributes() const;
  const std::string& function_name() const;
  const NativeFunction& function() const;
  // Why a value is undefined, e.g. "'foo' is undefined"; empty when unknown.
  const std::string& undefined_hint() const;

  // Nesting depth of containers: 0 for scalars.
  int depth() const;
  // Values a deep walk visits (1 for a scalar), saturating: what comparing or copying it costs.
  uint64_t weight() const;

  // The same string, list, dict, namespace or function (Python's `is`), not merely equal.
  bool is_same_object(const Value& other) const {
    return data_ != nullptr && kind_ == other.kind_ && data_ == other.data_;
  }

  // Dict lookup by Python equality of keys; nullptr when absent.
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;

 private:
  struct ListData;
  struct DictData;
  struct NamespaceData;
  struct FunctionData;

  static Value from_json_at(const nlohmann::ordered_json& json, int depth);

  Kind kind_ = Kind::kUndefined;
  union Scalar {
    bool b;
    int64_t i;
    double f;
  } scalar_{.i = 0};
  std::shared_ptr<const void> data_;
};

// Python ==, across int, float and bool as numbers; namespaces and functions by identity.
bool equals(const Value& a, const Value& b);
// Python's type name, for error messages ("str", "int", "dict", "NoneType", ...).
const char* type_name(const Value& value);

}  // namespace tidal::jinja
