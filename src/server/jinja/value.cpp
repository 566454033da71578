// The dynamic values a template computes with, modelled on the Python objects Jinja hands around.
#include "server/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "common/error.h"

namespace tidal::jinja {

struct Value::ListData {
  std::vector<Value> items;
  bool tuple = false;
  int depth = 1;
  uint64_t weight = 1;
};

struct Value::DictData {
  std::vector<std::pair<Value, Value>> entries;
  int depth = 1;
  uint64_t weight = 1;
};

struct Value::NamespaceData {
  mutable std::vector<std::pair<std::string, Value>> attributes;
};

struct Value::FunctionData {
  std::string name;
  NativeFunction function;
};

namespace {

// Depth and weight of a container, accumulated over its elements.
struct Shape {
  int depth = 1;
  uint64_t weight = 1;

  void add(const Value& element) {
    depth = std::max(depth, element.depth() + 1);
    // Shared sub-lists can make the total astronomically large; saturate rather than wrap.
    weight = std::min(weight + element.weight(), kMaxWeight);
  }
  void check() const {
    if (depth > kMaxValueDepth) TIDAL_FAIL("value nested deeper than ", kMaxValueDepth, " levels");
  }
  static constexpr uint64_t kMaxWeight = uint64_t{1} << 62;
};

// Equal for keys Python's dict treats as the same (1, 1.0 and True), so duplicates can be found by
// hashing; nullopt for keys that must be compared one by one.
std::optional<std::string> key_signature(const Value& key) {
  switch (key.kind()) {
    case Value::Kind::kString:
      return "s" + key.as_string();
    case Value::Kind::kNone:
      return std::string("n");
    case Value::Kind::kBool:
    case Value::Kind::kInt:
      return "i" + std::to_string(key.as_int());
    case Value::Kind::kFloat: {
      const double x = key.as_double();
      if (x == std::trunc(x) && std::fabs(x) < 9.2e18) {
        return "i" + std::to_string(static_cast<int64_t>(x));
      }
      std::string bits(sizeof(double), '\0');
      std::memcpy(bits.data(), &x, sizeof(double));
      return "f" + bits;
    }
    default:
      return std::nullopt;
  }
}

void require_hashable(const Value& key) {
  if (key.is_list() && !key.is_tuple()) TIDAL_FAIL("unhashable type: 'list'");
  if (key.is_dict()) TIDAL_FAIL("unhashable type: 'dict'");
}

const std::string& empty_string() {
  static const std::string empty;
  return empty;
}

}  // namespace

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.data_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::from_bool(bool value) {
  Value v;
  v.kind_ = Kind::kBool;
  v.scalar_.b = value;
  return v;
}

Value Value::from_int(int64_t value) {
  Value v;
  v.kind_ = Kind::kInt;
  v.scalar_.i = value;
  return v;
}

Value Value::from_float(double value) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.scalar_.f = value;
  return v;
}

Value Value::from_string(std::string value) {
  Value v;
  v.kind_ = Kind::kString;
  v.data_ = std::make_shared<const std::string>(std::move(value));
  return v;
}

Value Value::from_list(std::vector<Value> items, bool tuple) {
  Shape shape;
  for (const Value& item : items) shape.add(item);
  shape.check();
  auto data = std::make_shared<ListData>();
  data->depth = shape.depth;
  data->weight = shape.weight;
  data->items = std::move(items);
  data->tuple = tuple;
  Value v;
  v.kind_ = Kind::kList;
  v.data_ = std::move(data);
  return v;
}

Value Value::from_dict(std::vector<std::pair<Value, Value>> items) {
  auto data = std::make_shared<DictData>();
  data->entries.reserve(items.size());
  std::unordered_map<std::string, size_t> positions;
  for (auto& [key, value] : items) {
    require_hashable(key);
    std::optional<std::string> signature = key_signature(key);
    std::optional<size_t> existing;
    if (signature) {
      const auto it = positions.find(*signature);
      if (it != positions.end()) existing = it->second;
    } else {
      for (size_t i = 0; i < data->entries.size(); ++i) {
        if (equals(data->entries[i].first, key)) {
          existing = i;
          break;
        }
      }
    }
    if (existing) {
      data->entries[*existing].second = std::move(value);
      continue;
    }
    if (signature) positions.emplace(std::move(*signature), data->entries.size());
    data->entries.emplace_back(std::move(key), std::move(value));
  }
  Shape shape;
  for (const auto& [key, value] : data->entries) {
    shape.add(key);
    shape.add(value);
  }
  shape.check();
  data->depth = shape.depth;
  data->weight = shape.weight;
  Value v;
  v.kind_ = Kind::kDict;
  v.data_ = std::move(data);
  return v;
}

Value Value::new_namespace(std::vector<std::pair<std::string, Value>> attributes) {
  auto data = std::make_shared<NamespaceData>();
  data->attributes = std::move(attributes);
  Value v;
  v.kind_ = Kind::kNamespace;
  v.data_ = std::move(data);
  return v;
}

Value Value::from_function(std::string name, NativeFunction function) {
  auto data = std::make_shared<FunctionData>();
  data->name = std::move(name);
  data->function = std::move(function);
  Value v;
  v.kind_ = Kind::kFunction;
  v.data_ = std::move(data);
  return v;
}

Value Value::from_unique_dict(std::vector<std::pair<Value, Value>> entries) {
  Shape shape;
  for (const auto& [key, value] : entries) {
    shape.add(key);
    shape.add(value);
  }
  shape.check();
  auto data = std::make_shared<DictData>();
  data->depth = shape.depth;
  data->weight = shape.weight;
  data->entries = std::move(entries);
  Value v;
  v.kind_ = Kind::kDict;
  v.data_ = std::move(data);
  return v;
}

Value Value::from_json_at(const nlohmann::ordered_json& json, int depth) {
  if (depth > kMaxValueDepth) TIDAL_FAIL("JSON nested deeper than ", kMaxValueDepth, " levels");
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::from_bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::from_int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto value = json.get<uint64_t>();
      if (value > static_cast<uint64_t>(INT64_MAX)) {
        return Value::from_float(static_cast<double>(value));
      }
      return Value::from_int(static_cast<int64_t>(value));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::from_float(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::from_string(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(from_json_at(item, depth + 1));
      return Value::from_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      // JSON object keys are already unique, so skip from_dict's duplicate search.
      std::vector<std::pair<Value, Value>> entries;
      entries.reserve(json.size());
      for (const auto& [key, item] : json.items()) {
        entries.emplace_back(Value::from_string(key), from_json_at(item, depth + 1));
      }
      return from_unique_dict(std::move(entries));
    }
    case nlohmann::ordered_json::value_t::binary:
    case nlohmann::ordered_json::value_t::discarded:
      break;
  }
  TIDAL_FAIL("unsupported JSON value in template data");
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  return from_json_at(json, 1);
}

double Value::as_double() const {
  if (kind_ == Kind::kFloat) return scalar_.f;
  return static_cast<double>(as_int());
}

const std::string& Value::as_string() const {
  return *static_cast<const std::string*>(data_.get());
}

const std::vector<Value>& Value::items() const {
  return static_cast<const ListData*>(data_.get())->items;
}

bool Value::is_tuple() const {
  return kind_ == Kind::kList && static_cast<const ListData*>(data_.get())->tuple;
}

const std::vector<std::pair<Value, Value>>& Value::entries() const {
  return static_cast<const DictData*>(data_.get())->entries;
}

std::vector<std::pair<std::string, Value>>& Value::attributes() const {
  return static_cast<const NamespaceData*>(data_.get())->attributes;
}

const std::string& Value::function_name() const {
  return static_cast<const FunctionData*>(data_.get())->name;
}

const NativeFunction& Value::function() const {
  return static_cast<const FunctionData*>(data_.get())->function;
}

const std::string& Value::undefined_hint() const {
  if (kind_ != Kind::kUndefined || !data_) return empty_string();
  return *static_cast<const std::string*>(data_.get());
}

int Value::depth() const {
  if (kind_ == Kind::kList) return static_cast<const ListData*>(data_.get())->depth;
  if (kind_ == Kind::kDict) return static_cast<const DictData*>(data_.get())->depth;
  return 0;
}

uint64_t Value::weight() const {
  if (kind_ == Kind::kList) return static_cast<const ListData*>(data_.get())->weight;
  if (kind_ == Kind::kDict) return static_cast<const DictData*>(data_.get())->weight;
  return 1;
}

const Value* Value::find(const Value& key) const {
  for (const auto& entry : entries()) {
    if (equals(entry.first, key)) return &entry.second;
  }
  return nullptr;
}

const Value* Value::find(std::string_view key) const {
  for (const auto& entry : entries()) {
    if (entry.first.is_string() && entry.first.as_string() == key) return &entry.second;
  }
  return nullptr;
}

bool equals(const Value& a, const Value& b) {
  using Kind = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  // Python compares containers element by element only after an identity check.
  if (a.is_same_object(b)) return true;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.as_string() == b.as_string();
    case Kind::kList: {
      // Python never finds a list equal to a tuple.
      if (a.is_tuple() != b.is_tuple()) return false;
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!equals(x[i], y[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& [key, value] : a.entries()) {
        const Value* other = b.find(key);
        if (other == nullptr || !equals(value, *other)) return false;
      }
      return true;
    }
    case Kind::kNamespace:
      return &a.attributes() == &b.attributes();
    case Kind::kFunction:
      return &a.function() == &b.function();
    default:
      return false;
  }
}

const char* type_name(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return value.is_tuple() ? "tuple" : "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kFunction:
      return "function";
  }
  return "object";
}

}  // namespace tidal::jinja
