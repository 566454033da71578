// Jinja's tests (`x is name(args)`).
#include "server/jinja/builtins.h"

#include "common/error.h"
#include "server/jinja/ops.h"
#include "server/jinja/py_format.h"
#include "server/jinja/runtime.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

#define TIDAL_JINJA_TEST(name, expression)                                                \
  bool test_##name(Runtime&, [[maybe_unused]] const Value& value, const CallArgs& call) { \
    BoundArgs args("test '" #name "'", call, {});                                         \
    return expression;                                                                    \
  }

TIDAL_JINJA_TEST(defined, !value.is_undefined())
TIDAL_JINJA_TEST(undefined, value.is_undefined())
TIDAL_JINJA_TEST(none, value.is_none())
TIDAL_JINJA_TEST(boolean, value.is_bool())
TIDAL_JINJA_TEST(false, value.is_bool() && !value.as_bool())
TIDAL_JINJA_TEST(true, value.is_bool() && value.as_bool())
TIDAL_JINJA_TEST(integer, value.is_int())
TIDAL_JINJA_TEST(float, value.is_float())
TIDAL_JINJA_TEST(number, value.is_number())
TIDAL_JINJA_TEST(string, value.is_string())
TIDAL_JINJA_TEST(mapping, value.is_dict())
TIDAL_JINJA_TEST(iterable,
                 value.is_string() || value.is_list() || value.is_dict() || value.is_undefined())
TIDAL_JINJA_TEST(sequence,
                 value.is_string() || value.is_list() || value.is_dict() || value.is_undefined())
// Jinja's Undefined defines __call__ (to fail), so Python's callable() accepts it.
TIDAL_JINJA_TEST(callable, value.is_function() || value.is_undefined())
TIDAL_JINJA_TEST(escaped, false)
#undef TIDAL_JINJA_TEST

const Value& single_argument(const char* what, const CallArgs& call) {
  BoundArgs args(what, call, {"other"});
  if (!args.has(0)) TIDAL_FAIL(what, " needs an argument");
  return *args.get(0);
}

template <CompareOp Op>
bool compare_test(Runtime& runtime, const Value& v, const CallArgs& a) {
  return compare(runtime, Op, v,
                 single_argument(cat("test '", compare_op_symbol(Op), "'").c_str(), a));
}

bool test_sameas(Runtime&, const Value& v, const CallArgs& a) {
  const Value& other = single_argument("test 'sameas'", a);
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kList:
      return &v.items() == &other.items();
    case Value::Kind::kDict:
      return &v.entries() == &other.entries();
    case Value::Kind::kString:
      return &v.as_string() == &other.as_string() || v.as_string() == other.as_string();
    default:
      return equals(v, other);
  }
}

bool test_divisibleby(Runtime& runtime, const Value& v, const CallArgs& a) {
  const Value& divisor = single_argument("test 'divisibleby'", a);
  return equals(binary_op(runtime, BinaryOp::kMod, v, divisor), Value::from_int(0));
}

bool test_even(Runtime& runtime, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'even'", a, {});
  return equals(binary_op(runtime, BinaryOp::kMod, v, Value::from_int(2)), Value::from_int(0));
}

bool test_odd(Runtime& runtime, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'odd'", a, {});
  return equals(binary_op(runtime, BinaryOp::kMod, v, Value::from_int(2)), Value::from_int(1));
}

bool has_case(Runtime& runtime, const Value& v, bool want_upper) {
  const std::string text = to_str(v, runtime.text_limit());
  bool cased = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    if (want_upper ? is_lower(c) : is_upper(c)) return false;
    cased = cased || (want_upper ? is_upper(c) : is_lower(c));
  }
  return cased;
}

bool test_lower(Runtime& r, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'lower'", a, {});
  return has_case(r, v, false);
}

bool test_upper(Runtime& r, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'upper'", a, {});
  return has_case(r, v, true);
}

bool test_filter(Runtime&, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'filter'", a, {});
  return v.is_string() && find_filter(v.as_string()) != nullptr;
}

bool test_test(Runtime&, const Value& v, const CallArgs& a) {
  BoundArgs args("test 'test'", a, {});
  return v.is_string() && find_test(v.as_string()) != nullptr;
}

struct NamedTest {
  const char* name;
  TestFunction function;
};

constexpr NamedTest kTests[] = {
    {"!=", compare_test<CompareOp::kNe>},
    {"<", compare_test<CompareOp::kLt>},
    {"<=", compare_test<CompareOp::kLe>},
    {"==", compare_test<CompareOp::kEq>},
    {">", compare_test<CompareOp::kGt>},
    {">=", compare_test<CompareOp::kGe>},
    {"boolean", test_boolean},
    {"callable", test_callable},
    {"defined", test_defined},
    {"divisibleby", test_divisibleby},
    {"eq", compare_test<CompareOp::kEq>},
    {"equalto", compare_test<CompareOp::kEq>},
    {"escaped", test_escaped},
    {"even", test_even},
    {"false", test_false},
    {"filter", test_filter},
    {"float", test_float},
    {"ge", compare_test<CompareOp::kGe>},
    {"greaterthan", compare_test<CompareOp::kGt>},
    {"gt", compare_test<CompareOp::kGt>},
    {"in", compare_test<CompareOp::kIn>},
    {"integer", test_integer},
    {"iterable", test_iterable},
    {"le", compare_test<CompareOp::kLe>},
    {"lessthan", compare_test<CompareOp::kLt>},
    {"lower", test_lower},
    {"lt", compare_test<CompareOp::kLt>},
    {"mapping", test_mapping},
    {"ne", compare_test<CompareOp::kNe>},
    {"none", test_none},
    {"number", test_number},
    {"odd", test_odd},
    {"sameas", test_sameas},
    {"sequence", test_sequence},
    {"string", test_string},
    {"test", test_test},
    {"true", test_true},
    {"undefined", test_undefined},
    {"upper", test_upper},
};
}  // namespace

TestFunction find_test(std::string_view name) {
  for (const NamedTest& test : kTests) {
    if (name == test.name) return test.function;
  }
  return nullptr;
}

}  // namespace tidal::jinja
