// Python semantics of the operators Jinja compiles to: truthiness, arithmetic, comparison,
// membership, attribute and item lookup, slicing, iteration.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "server/jinja/runtime.h"
#include "server/jinja/value.h"

namespace tidal::jinja {

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat };
enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

const char* binary_op_symbol(BinaryOp op);
const char* compare_op_symbol(CompareOp op);

bool truthy(const Value& value);
// Jinja's UndefinedError: using an undefined value for more than printing or testing it.
[[noreturn]] void fail_undefined(const Value& value);

Value binary_op(Runtime& runtime, BinaryOp op, const Value& a, const Value& b);
Value negate(const Value& value);
Value unary_plus(const Value& value);
// Charges `runtime` for the walk: a membership test or comparison of big values is not one step.
bool compare(Runtime& runtime, CompareOp op, const Value& a, const Value& b);
// Python's a < b, which refuses to order unrelated types.
bool less_than(const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);

// Jinja's sandboxed getattr: attributes (methods) first, then items. Missing is undefined.
Value get_attr(const Value& object, std::string_view name);
// Jinja's sandboxed getitem: items first, then attributes when the key is a string.
Value get_item(const Value& object, const Value& key);
// object[start:stop:step]; an undefined or none bound is left out.
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// The elements a for loop visits: list items, dict keys, string characters; undefined is empty.
std::vector<Value> iterate(const Value& value);
size_t length(const Value& value);

// format % args, for strings (Python's printf-style formatting).
std::string percent_format(Runtime& runtime, const std::string& format, const Value& args);

}  // namespace tidal::jinja
