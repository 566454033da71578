// Python semantics of the operators Jinja compiles to: truthiness, arithmetic, comparison,
// membership, attribute and item lookup, slicing, iteration.
#include "server/jinja/ops.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "common/error.h"
#include "server/jinja/methods.h"
#include "server/jinja/py_format.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

[[noreturn]] void fail_operands(const char* symbol, const Value& a, const Value& b) {
  TIDAL_FAIL("unsupported operand type(s) for ", symbol, ": '", type_name(a), "' and '",
             type_name(b), "'");
}

void check_overflow(bool overflow) {
  if (overflow) TIDAL_FAIL("integer overflow");
}

// Python's float // and %: the remainder takes the divisor's sign, and the quotient is what is
// left, divided exactly, which only needs rounding away the division's error.
void float_divmod(double x, double y, double& quotient, double& remainder) {
  if (y == 0.0) TIDAL_FAIL("float division by zero");
  remainder = std::fmod(x, y);
  if (remainder != 0.0 && (remainder < 0) != (y < 0)) remainder += y;
  if (remainder == 0.0) remainder = std::copysign(0.0, y);
  quotient = std::round((x - remainder) / y);
  if (quotient == 0.0) quotient = std::copysign(0.0, x / y);
}

Value repeat(Runtime& runtime, const Value& sequence, int64_t times) {
  if (times <= 0) {
    return sequence.is_string() ? Value::from_string("")
                                : Value::from_list({}, sequence.is_tuple());
  }
  if (sequence.is_string()) {
    const std::string& text = sequence.as_string();
    if (!text.empty() && static_cast<uint64_t>(times) > runtime.text_limit() / text.size()) {
      TIDAL_FAIL("repeated string longer than the limit of ", runtime.text_limit(), " bytes");
    }
    runtime.charge(text.size() * static_cast<size_t>(times));
    std::string out;
    out.reserve(text.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += text;
    return Value::from_string(std::move(out));
  }
  const auto& items = sequence.items();
  if (!items.empty() && static_cast<uint64_t>(times) > runtime.text_limit() / items.size()) {
    TIDAL_FAIL("repeated list longer than the limit of ", runtime.text_limit(), " items");
  }
  runtime.charge(items.size() * static_cast<size_t>(times));
  std::vector<Value> out;
  out.reserve(items.size() * static_cast<size_t>(times));
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::from_list(std::move(out), sequence.is_tuple());
}

int64_t int_pow(int64_t base, int64_t exponent) {
  int64_t result = 1;
  while (exponent > 0) {
    if (exponent & 1) check_overflow(__builtin_mul_overflow(result, base, &result));
    exponent >>= 1;
    if (exponent > 0) check_overflow(__builtin_mul_overflow(base, base, &base));
  }
  return result;
}

Value arithmetic(Runtime& runtime, BinaryOp op, const Value& a, const Value& b) {
  const char* symbol = binary_op_symbol(op);
  if (op == BinaryOp::kMul) {
    if ((a.is_string() || a.is_list()) && b.is_integral()) return repeat(runtime, a, b.as_int());
    if ((b.is_string() || b.is_list()) && a.is_integral()) return repeat(runtime, b, a.as_int());
  }
  if (!a.is_number() || !b.is_number()) fail_operands(symbol, a, b);
  if (op == BinaryOp::kDiv) {
    if (b.as_double() == 0.0) TIDAL_FAIL("division by zero");
    return Value::from_float(a.as_double() / b.as_double());
  }
  if (a.is_integral() && b.is_integral()) {
    const int64_t x = a.as_int();
    const int64_t y = b.as_int();
    int64_t r = 0;
    switch (op) {
      case BinaryOp::kAdd:
        check_overflow(__builtin_add_overflow(x, y, &r));
        return Value::from_int(r);
      case BinaryOp::kSub:
        check_overflow(__builtin_sub_overflow(x, y, &r));
        return Value::from_int(r);
      case BinaryOp::kMul:
        check_overflow(__builtin_mul_overflow(x, y, &r));
        return Value::from_int(r);
      case BinaryOp::kFloorDiv:
      case BinaryOp::kMod: {
        if (y == 0) TIDAL_FAIL("integer division or modulo by zero");
        if (x == std::numeric_limits<int64_t>::min() && y == -1) TIDAL_FAIL("integer overflow");
        int64_t quotient = x / y;
        int64_t remainder = x % y;
        if (remainder != 0 && ((remainder < 0) != (y < 0))) {
          quotient -= 1;
          remainder += y;
        }
        return Value::from_int(op == BinaryOp::kMod ? remainder : quotient);
      }
      case BinaryOp::kPow:
        if (y < 0) {
          if (x == 0) TIDAL_FAIL("0.0 cannot be raised to a negative power");
          return Value::from_float(std::pow(static_cast<double>(x), static_cast<double>(y)));
        }
        return Value::from_int(int_pow(x, y));
      default:
        break;
    }
  }
  const double x = a.as_double();
  const double y = b.as_double();
  switch (op) {
    case BinaryOp::kAdd:
      return Value::from_float(x + y);
    case BinaryOp::kSub:
      return Value::from_float(x - y);
    case BinaryOp::kMul:
      return Value::from_float(x * y);
    case BinaryOp::kFloorDiv:
    case BinaryOp::kMod: {
      double floordiv = 0;
      double mod = 0;
      float_divmod(x, y, floordiv, mod);
      return Value::from_float(op == BinaryOp::kMod ? mod : floordiv);
    }
    case BinaryOp::kPow:
      if (x == 0.0 && y < 0) TIDAL_FAIL("0.0 cannot be raised to a negative power");
      if (x < 0 && y != std::floor(y)) TIDAL_FAIL("negative number raised to a fractional power");
      return Value::from_float(std::pow(x, y));
    default:
      fail_operands(symbol, a, b);
  }
}

// Python's clamping of slice bounds (PySlice_AdjustIndices).
int64_t clamp_bound(const Value& bound, int64_t length, int64_t step, bool is_start) {
  if (bound.is_undefined() || bound.is_none()) {
    if (step > 0) return is_start ? 0 : length;
    return is_start ? length - 1 : -1;
  }
  int64_t index = bound.as_int();
  if (index < 0) {
    index = index < -length ? -1 : index + length;
    if (index < 0) index = step < 0 ? -1 : 0;
  } else if (index >= length) {
    index = step < 0 ? length - 1 : length;
  }
  return index;
}

bool is_slice_bound(const Value& bound) {
  return bound.is_undefined() || bound.is_none() || bound.is_integral();
}

std::string code_point_string(std::string_view text, size_t begin, size_t end) {
  return std::string(text.substr(begin, end - begin));
}

const std::vector<Value>& no_values() {
  static const std::vector<Value> empty;
  return empty;
}

}  // namespace

const char* binary_op_symbol(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd:
      return "+";
    case BinaryOp::kSub:
      return "-";
    case BinaryOp::kMul:
      return "*";
    case BinaryOp::kDiv:
      return "/";
    case BinaryOp::kFloorDiv:
      return "//";
    case BinaryOp::kMod:
      return "%";
    case BinaryOp::kPow:
      return "**";
    case BinaryOp::kConcat:
      return "~";
  }
  return "?";
}

const char* compare_op_symbol(CompareOp op) {
  switch (op) {
    case CompareOp::kEq:
      return "==";
    case CompareOp::kNe:
      return "!=";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
    case CompareOp::kIn:
      return "in";
    case CompareOp::kNotIn:
      return "not in";
  }
  return "?";
}

bool truthy(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return value.as_bool();
    case Value::Kind::kInt:
      return value.as_int() != 0;
    case Value::Kind::kFloat:
      return value.as_double() != 0.0;
    case Value::Kind::kString:
      return !value.as_string().empty();
    case Value::Kind::kList:
      return !value.items().empty();
    case Value::Kind::kDict:
      return !value.entries().empty();
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      return true;
  }
  return false;
}

void fail_undefined(const Value& value) {
  const std::string& hint = value.undefined_hint();
  if (hint.empty()) TIDAL_FAIL("value is undefined");
  throw Error(hint);
}

Value binary_op(Runtime& runtime, BinaryOp op, const Value& a, const Value& b) {
  if (op == BinaryOp::kConcat) {
    std::string out = to_str(a, runtime.text_limit());
    append_str(out, b, runtime.text_limit());
    runtime.charge(out.size());
    return Value::from_string(std::move(out));
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (op == BinaryOp::kAdd) {
    if (a.is_string() && b.is_string()) {
      const size_t size = a.as_string().size() + b.as_string().size();
      if (size > runtime.text_limit()) {
        TIDAL_FAIL("string longer than the limit of ", runtime.text_limit(), " bytes");
      }
      runtime.charge(size);
      std::string out;
      out.reserve(size);
      out += a.as_string();
      out += b.as_string();
      return Value::from_string(std::move(out));
    }
    if (a.is_list() && b.is_list()) {
      if (a.is_tuple() != b.is_tuple()) fail_operands("+", a, b);
      runtime.charge(a.items().size() + b.items().size());
      std::vector<Value> out;
      out.reserve(a.items().size() + b.items().size());
      out.insert(out.end(), a.items().begin(), a.items().end());
      out.insert(out.end(), b.items().begin(), b.items().end());
      return Value::from_list(std::move(out), a.is_tuple());
    }
  }
  if (op == BinaryOp::kMod && a.is_string()) {
    return Value::from_string(percent_format(runtime, a.as_string(), b));
  }
  return arithmetic(runtime, op, a, b);
}

Value negate(const Value& value) {
  if (value.is_undefined()) fail_undefined(value);
  if (value.is_integral()) {
    if (value.as_int() == std::numeric_limits<int64_t>::min()) TIDAL_FAIL("integer overflow");
    return Value::from_int(-value.as_int());
  }
  if (value.is_float()) return Value::from_float(-value.as_double());
  TIDAL_FAIL("bad operand type for unary -: '", type_name(value), "'");
}

Value unary_plus(const Value& value) {
  if (value.is_undefined()) fail_undefined(value);
  if (value.is_integral()) return Value::from_int(value.as_int());
  if (value.is_float()) return value;
  TIDAL_FAIL("bad operand type for unary +: '", type_name(value), "'");
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  TIDAL_FAIL("'<' not supported between instances of '", type_name(a), "' and '", type_name(b),
             "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) fail_undefined(item);
        TIDAL_FAIL("'in <string>' requires string as left operand, not ", type_name(item));
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& element : container.items()) {
        if (equals(element, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (item.is_dict() || (item.is_list() && !item.is_tuple())) {
        TIDAL_FAIL("unhashable type: '", type_name(item), "'");
      }
      return container.find(item) != nullptr;
    default:
      TIDAL_FAIL("argument of type '", type_name(container), "' is not iterable");
  }
}

bool compare(Runtime& runtime, CompareOp op, const Value& a, const Value& b) {
  if (op == CompareOp::kIn || op == CompareOp::kNotIn) {
    runtime.charge(b.is_string() ? b.as_string().size() / 16 + 1 : b.weight());
  } else if (!a.is_same_object(b)) {
    runtime.charge(std::min(a.weight(), b.weight()));
  }
  switch (op) {
    case CompareOp::kEq:
      return equals(a, b);
    case CompareOp::kNe:
      return !equals(a, b);
    case CompareOp::kLt:
      return less_than(a, b);
    case CompareOp::kLe:
      return less_than(a, b) || equals(a, b);
    case CompareOp::kGt:
      return less_than(b, a);
    case CompareOp::kGe:
      return less_than(b, a) || equals(a, b);
    case CompareOp::kIn:
      return contains(b, a);
    case CompareOp::kNotIn:
      return !contains(b, a);
  }
  return false;
}

Value get_attr(const Value& object, std::string_view name) {
  if (object.is_undefined()) fail_undefined(object);
  if (auto method = find_method(object, name)) return *method;
  if (object.is_dict()) {
    if (const Value* found = object.find(name)) return *found;
  } else if (object.is_namespace()) {
    for (const auto& [key, value] : object.attributes()) {
      if (key == name) return value;
    }
  }
  if (object.is_none()) return Value::undefined(cat("'None' has no attribute '", name, "'"));
  return Value::undefined(cat("'", type_name(object), " object' has no attribute '", name, "'"));
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) fail_undefined(object);
  if (object.is_dict() && !key.is_dict() && !(key.is_list() && !key.is_tuple())) {
    if (const Value* found = object.find(key)) return *found;
  } else if ((object.is_list() || object.is_string()) && key.is_integral()) {
    int64_t index = key.as_int();
    if (object.is_list()) {
      const auto size = static_cast<int64_t>(object.items().size());
      if (index < 0) index += size;
      if (index >= 0 && index < size) return object.items()[static_cast<size_t>(index)];
    } else {
      const std::string& text = object.as_string();
      if (index >= 0) {
        size_t pos = 0;
        for (int64_t i = 0; i < index && pos < text.size(); ++i) next_code_point(text, pos);
        if (pos < text.size()) {
          const size_t start = pos;
          next_code_point(text, pos);
          return Value::from_string(code_point_string(text, start, pos));
        }
      } else {
        const auto offsets = code_point_offsets(text);
        const auto count = static_cast<int64_t>(offsets.size()) - 1;
        index += count;
        if (index >= 0) {
          const auto i = static_cast<size_t>(index);
          return Value::from_string(code_point_string(text, offsets[i], offsets[i + 1]));
        }
      }
    }
    return Value::undefined(cat("'", type_name(object), " object' has no element ", key.as_int()));
  }
  if (key.is_string()) {
    if (auto method = find_method(object, key.as_string())) return *method;
    if (object.is_namespace()) return get_attr(object, key.as_string());
    return Value::undefined(
        cat("'", type_name(object), " object' has no attribute '", key.as_string(), "'"));
  }
  return Value::undefined(cat("'", type_name(object), " object' has no element ", repr(key, 200)));
}

Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_undefined()) fail_undefined(object);
  if (!is_slice_bound(start) || !is_slice_bound(stop) || !is_slice_bound(step) ||
      !(object.is_list() || object.is_string())) {
    // Python raises TypeError, which Jinja's getitem turns into an undefined value.
    return Value::undefined(cat("'", type_name(object), " object' cannot be sliced that way"));
  }
  const int64_t stride = (step.is_undefined() || step.is_none()) ? 1 : step.as_int();
  if (stride == 0) TIDAL_FAIL("slice step cannot be zero");
  std::vector<size_t> offsets;
  int64_t size = 0;
  if (object.is_string()) {
    offsets = code_point_offsets(object.as_string());
    size = static_cast<int64_t>(offsets.size()) - 1;
  } else {
    size = static_cast<int64_t>(object.items().size());
  }
  const int64_t first = clamp_bound(start, size, stride, true);
  const int64_t last = clamp_bound(stop, size, stride, false);
  std::vector<int64_t> indices;
  if (stride > 0) {
    for (int64_t i = first; i < last; i += stride) {
      indices.push_back(i);
      if (i > std::numeric_limits<int64_t>::max() - stride) break;
    }
  } else {
    for (int64_t i = first; i > last; i += stride) {
      indices.push_back(i);
      if (i < std::numeric_limits<int64_t>::min() - stride) break;
    }
  }
  if (object.is_string()) {
    const std::string& text = object.as_string();
    std::string out;
    if (stride == 1 && !indices.empty()) {
      return Value::from_string(
          code_point_string(text, offsets[static_cast<size_t>(first)],
                            offsets[static_cast<size_t>(indices.back()) + 1]));
    }
    for (int64_t i : indices) {
      const auto u = static_cast<size_t>(i);
      out.append(text, offsets[u], offsets[u + 1] - offsets[u]);
    }
    return Value::from_string(std::move(out));
  }
  std::vector<Value> out;
  out.reserve(indices.size());
  for (int64_t i : indices) out.push_back(object.items()[static_cast<size_t>(i)]);
  return Value::from_list(std::move(out), object.is_tuple());
}

std::vector<Value> iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return value.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      keys.reserve(value.entries().size());
      for (const auto& entry : value.entries()) keys.push_back(entry.first);
      return keys;
    }
    case Value::Kind::kString: {
      const std::string& text = value.as_string();
      std::vector<Value> characters;
      size_t pos = 0;
      while (pos < text.size()) {
        const size_t start = pos;
        next_code_point(text, pos);
        characters.push_back(Value::from_string(code_point_string(text, start, pos)));
      }
      return characters;
    }
    default:
      TIDAL_FAIL("'", type_name(value), "' object is not iterable");
  }
  return no_values();
}

size_t length(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return code_point_count(value.as_string());
    case Value::Kind::kList:
      return value.items().size();
    case Value::Kind::kDict:
      return value.entries().size();
    default:
      TIDAL_FAIL("object of type '", type_name(value), "' has no len()");
  }
}

std::string percent_format(Runtime& runtime, const std::string& format, const Value& args) {
  std::vector<Value> values;
  const bool mapping = args.is_dict();
  if (args.is_tuple()) {
    values = args.items();
  } else if (!mapping) {
    values.push_back(args);
  }
  size_t next = 0;
  std::string out;
  size_t i = 0;
  while (i < format.size()) {
    const char c = format[i++];
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    if (i >= format.size()) TIDAL_FAIL("incomplete format");
    const Value* argument = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos || !mapping) TIDAL_FAIL("format requires a mapping");
      const Value* found = args.find(std::string_view(format).substr(i + 1, close - i - 1));
      if (found == nullptr) {
        TIDAL_FAIL("format key '", format.substr(i + 1, close - i - 1), "' is missing");
      }
      argument = found;
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() &&
           std::string_view("-+ #0").find(format[i]) != std::string_view::npos) {
      flags.push_back(format[i++]);
    }
    std::string width;
    while (i < format.size() && format[i] >= '0' && format[i] <= '9' && width.size() < 4) {
      width.push_back(format[i++]);
    }
    std::string precision;
    if (i < format.size() && format[i] == '.') {
      ++i;
      precision = ".";
      while (i < format.size() && format[i] >= '0' && format[i] <= '9' && precision.size() < 4) {
        precision.push_back(format[i++]);
      }
    }
    if (i >= format.size()) TIDAL_FAIL("incomplete format");
    const char conversion = format[i++];
    if (conversion == '%') {
      out.push_back('%');
      continue;
    }
    if (argument == nullptr) {
      if (mapping) {
        argument = &args;
      } else {
        if (next >= values.size()) TIDAL_FAIL("not enough arguments for format string");
        argument = &values[next++];
      }
    }
    std::string piece;
    switch (conversion) {
      case 's':
      case 'r':
      case 'a': {
        piece = conversion == 's' ? to_str(*argument, runtime.text_limit())
                                  : repr(*argument, runtime.text_limit());
        if (precision.size() > 1) {
          const auto keep = static_cast<size_t>(std::stoi(precision.substr(1)));
          const auto offsets = code_point_offsets(piece);
          if (keep + 1 < offsets.size()) piece.resize(offsets[keep]);
        }
        const size_t wanted = width.empty() ? 0 : static_cast<size_t>(std::stoi(width));
        const size_t have = code_point_count(piece);
        if (have < wanted) {
          const std::string pad(wanted - have, ' ');
          piece = flags.find('-') != std::string::npos ? piece + pad : pad + piece;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        if (!argument->is_number()) {
          TIDAL_FAIL("%", conversion, " format: a real number is required, not ",
                     type_name(*argument));
        }
        char buffer[512];
        const bool integral = std::string_view("diuxXo").find(conversion) != std::string_view::npos;
        if (integral) {
          const std::string spec = "%" + flags + width + precision + "ll" +
                                   (conversion == 'i' || conversion == 'u' ? 'd' : conversion);
          long long number = 0;
          if (argument->is_float()) {
            const double truncated = std::trunc(argument->as_double());
            if (!(std::fabs(truncated) < 9.2e18))
              TIDAL_FAIL("%", conversion, " format: number too large");
            number = static_cast<long long>(truncated);
          } else {
            number = static_cast<long long>(argument->as_int());
          }
          std::snprintf(buffer, sizeof(buffer), spec.c_str(), number);
        } else {
          const std::string spec = "%" + flags + width + precision + conversion;
          std::snprintf(buffer, sizeof(buffer), spec.c_str(), argument->as_double());
        }
        piece = buffer;
        break;
      }
      default:
        TIDAL_FAIL("unsupported format character '", conversion, "'");
    }
    out += piece;
    if (out.size() > runtime.text_limit()) TIDAL_FAIL("formatted string too long");
  }
  if (!mapping && next < values.size()) {
    TIDAL_FAIL("not all arguments converted during string formatting");
  }
  runtime.charge(out.size());
  return out;
}

}  // namespace tidal::jinja
