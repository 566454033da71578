// Walks the syntax tree: evaluates expressions and renders statements with Jinja's scoping.
#include "server/jinja/interpreter.h"

#include <optional>

#include "common/error.h"
#include "server/jinja/py_format.h"

namespace tidal::jinja {

const Value* Scope::find(std::string_view name) const {
  for (const Scope* scope = this; scope != nullptr; scope = scope->parent_.get()) {
    for (const auto& [key, value] : scope->variables_) {
      if (key == name) return &value;
    }
  }
  return nullptr;
}

void Scope::set(std::string_view name, Value value) {
  for (auto& [key, existing] : variables_) {
    if (key == name) {
      existing = std::move(value);
      return;
    }
  }
  variables_.emplace_back(std::string(name), std::move(value));
}

// Bounds nested evaluation (deep expressions, recursive macros) well inside the native stack.
class Interpreter::DepthGuard {
 public:
  explicit DepthGuard(Interpreter& interpreter) : interpreter_(interpreter) {
    if (++interpreter_.depth_ > interpreter_.limits().max_depth) {
      --interpreter_.depth_;
      TIDAL_FAIL("template recursion deeper than ", interpreter_.limits().max_depth, " levels");
    }
  }
  ~DepthGuard() { --interpreter_.depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  Interpreter& interpreter_;
};

Interpreter::Interpreter(std::string_view source, const RenderLimits& limits,
                         std::function<std::time_t()> clock)
    : Runtime(limits, std::move(clock)), source_(source) {}

std::string Interpreter::render(const Body& body, std::shared_ptr<Scope> scope) {
  std::string out;
  exec_body(body, scope, out);
  return out;
}

void Interpreter::rethrow_located(const SourceSpan& span, bool quote) {
  try {
    throw;
  } catch (const LocatedError&) {
    throw;
  } catch (const TemplateRaised&) {
    throw;
  } catch (const Error& error) {
    std::string where = cat("template error at line ", span.line, ", column ", span.column);
    if (quote && span.end > span.begin && span.end <= source_.size()) {
      constexpr size_t kMaxQuote = 80;
      std::string_view text = source_.substr(span.begin, span.end - span.begin);
      std::string quoted(text);
      if (text.size() > kMaxQuote) {
        // Cut at a character boundary: messages may end up in JSON, which needs valid UTF-8.
        size_t cut = kMaxQuote;
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        quoted = cat(text.substr(0, cut), "...");
      }
      where += cat(" in '", quoted, "'");
    }
    throw LocatedError(cat(where, ": ", error.what()));
  }
}

void Interpreter::write(std::string& out, const Value& value) {
  const size_t before = out.size();
  append_str(out, value, limits().max_output_bytes);
  if (out.size() > limits().max_output_bytes) {
    TIDAL_FAIL("output longer than the limit of ", limits().max_output_bytes, " bytes");
  }
  charge(out.size() - before);
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const std::shared_ptr<Scope>& scope,
                                         std::string& out) {
  DepthGuard guard(*this);
  for (const StmtPtr& stmt : body) {
    const Flow flow = exec(*stmt, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec(const Stmt& stmt, const std::shared_ptr<Scope>& scope,
                                    std::string& out) {
  charge(1);
  try {
    switch (stmt.kind) {
      case StmtKind::kText: {
        const std::string& text = static_cast<const TextStmt&>(stmt).text;
        if (out.size() + text.size() > limits().max_output_bytes) {
          TIDAL_FAIL("output longer than the limit of ", limits().max_output_bytes, " bytes");
        }
        out += text;
        charge(text.size());
        return Flow::kNormal;
      }
      case StmtKind::kOutput:
        write(out, eval(*static_cast<const OutputStmt&>(stmt).value, *scope));
        return Flow::kNormal;
      case StmtKind::kIf: {
        const auto& node = static_cast<const IfStmt&>(stmt);
        for (const auto& [condition, body] : node.branches) {
          if (truthy(eval(*condition, *scope))) return exec_body(body, scope, out);
        }
        return exec_body(node.else_body, scope, out);
      }
      case StmtKind::kFor:
        return exec_for(static_cast<const ForStmt&>(stmt), scope, out);
      case StmtKind::kSet: {
        const auto& node = static_cast<const SetStmt&>(stmt);
        assign(node.target, eval(*node.value, *scope), *scope);
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock: {
        const auto& node = static_cast<const SetBlockStmt&>(stmt);
        std::string captured;
        const Flow flow = exec_body(node.body, scope, captured);
        Value value = Value::from_string(std::move(captured));
        if (node.filter) {
          value = eval_filter(static_cast<const FilterExpr&>(*node.filter), *scope, &value);
        }
        assign(node.target, value, *scope);
        return flow;
      }
      case StmtKind::kMacro:
        define_macro(static_cast<const MacroStmt&>(stmt), scope);
        return Flow::kNormal;
      case StmtKind::kFilterBlock: {
        const auto& node = static_cast<const FilterBlockStmt&>(stmt);
        std::string captured;
        const Flow flow = exec_body(node.body, scope, captured);
        const Value body = Value::from_string(std::move(captured));
        write(out, eval_filter(static_cast<const FilterExpr&>(*node.filter), *scope, &body));
        return flow;
      }
      case StmtKind::kWith: {
        const auto& node = static_cast<const WithStmt&>(stmt);
        // Every value is computed in the enclosing scope before any name is bound.
        std::vector<Value> values;
        for (const auto& assignment : node.assignments) {
          values.push_back(eval(*assignment.second, *scope));
        }
        auto inner = std::make_shared<Scope>(scope);
        for (size_t i = 0; i < values.size(); ++i)
          assign(node.assignments[i].first, values[i], *inner);
        return exec_body(node.body, inner, out);
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kScope:
        return exec_body(static_cast<const ScopeStmt&>(stmt).body, scope, out);
    }
  } catch (const Error&) {
    rethrow_located(stmt.span, false);
  }
  return Flow::kNormal;
}

namespace {

// What loop.changed() last saw, shared by the iterations of one loop.
using ChangedState = std::shared_ptr<std::optional<Value>>;

Value make_loop(size_t index, const std::vector<Value>& items, const ChangedState& changed) {
  const auto i = static_cast<int64_t>(index);
  const auto n = static_cast<int64_t>(items.size());
  std::vector<std::pair<Value, Value>> fields;
  fields.reserve(13);
  auto field = [&](const char* name, Value value) {
    fields.emplace_back(Value::from_string(name), std::move(value));
  };
  field("index", Value::from_int(i + 1));
  field("index0", Value::from_int(i));
  field("revindex", Value::from_int(n - i));
  field("revindex0", Value::from_int(n - i - 1));
  field("first", Value::from_bool(i == 0));
  field("last", Value::from_bool(i == n - 1));
  field("length", Value::from_int(n));
  field("depth", Value::from_int(1));
  field("depth0", Value::from_int(0));
  field("previtem", index > 0 ? items[index - 1] : Value::undefined("there is no previous item"));
  field("nextitem",
        index + 1 < items.size() ? items[index + 1] : Value::undefined("there is no next item"));
  field("cycle", Value::from_function("loop.cycle", [index](Runtime&, CallArgs& args) {
          if (args.positional.empty()) TIDAL_FAIL("no items for cycling given");
          return args.positional[index % args.positional.size()];
        }));
  field("changed", Value::from_function("loop.changed", [changed](Runtime&, CallArgs& args) {
          Value current = Value::from_list(args.positional, true);
          if (*changed && equals(**changed, current)) return Value::from_bool(false);
          *changed = std::move(current);
          return Value::from_bool(true);
        }));
  return Value::from_unique_dict(std::move(fields));
}

}  // namespace

Interpreter::Flow Interpreter::exec_for(const ForStmt& stmt, const std::shared_ptr<Scope>& scope,
                                        std::string& out) {
  std::vector<Value> items = iterate(eval(*stmt.iterable, *scope));
  charge(items.size());
  if (stmt.condition) {
    // The filter sees the loop variable but not `loop`; loop.index counts only what passes.
    std::vector<Value> kept;
    for (Value& item : items) {
      Scope probe(scope);
      assign(stmt.target, item, probe);
      if (truthy(eval(*stmt.condition, probe))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec_body(stmt.else_body, scope, out);
  const auto changed = std::make_shared<std::optional<Value>>();
  for (size_t i = 0; i < items.size(); ++i) {
    charge(1);
    auto iteration = std::make_shared<Scope>(scope);
    assign(stmt.target, items[i], *iteration);
    iteration->set("loop", make_loop(i, items, changed));
    if (exec_body(stmt.body, iteration, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::assign(const Target& target, const Value& value, Scope& scope) {
  if (!target.attribute.empty()) {
    const Value* ns = scope.find(target.name);
    if (ns == nullptr || !ns->is_namespace()) {
      TIDAL_FAIL("cannot assign attribute on non-namespace object '", target.name, "'");
    }
    if (target.attribute.front() == '_') {
      TIDAL_FAIL("cannot store underscore-prefixed attribute '", target.attribute,
                 "' on a namespace");
    }
    auto& attributes = ns->attributes();
    for (auto& [name, existing] : attributes) {
      if (name == target.attribute) {
        existing = value;
        return;
      }
    }
    attributes.emplace_back(target.attribute, value);
    return;
  }
  if (target.tuple) {
    const std::vector<Value> parts = iterate(value);
    if (parts.size() != target.items.size()) {
      if (parts.size() > target.items.size()) {
        TIDAL_FAIL("too many values to unpack (expected ", target.items.size(), ")");
      }
      TIDAL_FAIL("not enough values to unpack (expected ", target.items.size(), ", got ",
                 parts.size(), ")");
    }
    for (size_t i = 0; i < parts.size(); ++i) assign(target.items[i], parts[i], scope);
    return;
  }
  scope.set(target.name, value);
}

void Interpreter::define_macro(const MacroStmt& stmt, const std::shared_ptr<Scope>& scope) {
  // A weak reference: the macro lives in the scope it captures, and a strong one would be a cycle.
  std::weak_ptr<Scope> defined_in = scope;
  const MacroStmt* node = &stmt;
  scope->set(stmt.name,
             Value::from_function(stmt.name, [this, node, defined_in](Runtime&, CallArgs& args) {
               return call_macro(*node, defined_in, args);
             }));
}

Value Interpreter::call_macro(const MacroStmt& stmt, const std::weak_ptr<Scope>& defined_in,
                              CallArgs& args) {
  DepthGuard guard(*this);
  std::shared_ptr<Scope> parent = defined_in.lock();
  if (!parent) TIDAL_FAIL("macro '", stmt.name, "' called after the block that defined it ended");
  auto scope = std::make_shared<Scope>(parent);
  std::vector<bool> used_keyword(args.keyword.size(), false);
  for (size_t i = 0; i < stmt.parameters.size(); ++i) {
    const auto& [name, fallback] = stmt.parameters[i];
    const Value* given = i < args.positional.size() ? &args.positional[i] : nullptr;
    for (size_t k = 0; k < args.keyword.size(); ++k) {
      if (args.keyword[k].first != name) continue;
      if (given != nullptr)
        TIDAL_FAIL("macro '", stmt.name, "' got multiple values for argument '", name, "'");
      given = &args.keyword[k].second;
      used_keyword[k] = true;
    }
    if (given != nullptr) {
      scope->set(name, *given);
    } else if (fallback) {
      scope->set(name, eval(*fallback, *scope));
    } else {
      scope->set(name, Value::undefined(cat("parameter '", name, "' was not provided")));
    }
  }
  std::vector<Value> extra;
  for (size_t i = stmt.parameters.size(); i < args.positional.size(); ++i) {
    extra.push_back(args.positional[i]);
  }
  std::vector<std::pair<Value, Value>> extra_keywords;
  for (size_t k = 0; k < args.keyword.size(); ++k) {
    if (!used_keyword[k]) {
      extra_keywords.emplace_back(Value::from_string(args.keyword[k].first),
                                  args.keyword[k].second);
    }
  }
  scope->set("varargs", Value::from_list(std::move(extra), true));
  scope->set("kwargs", Value::from_dict(std::move(extra_keywords)));
  std::string out;
  exec_body(stmt.body, scope, out);
  return Value::from_string(std::move(out));
}

Value Interpreter::eval(const Expr& expr, Scope& scope) {
  DepthGuard guard(*this);
  charge(1);
  try {
    return eval_node(expr, scope);
  } catch (const Error&) {
    rethrow_located(expr.span, true);
  }
}

CallArgs Interpreter::eval_arguments(const Arguments& args, Scope& scope) {
  CallArgs values;
  values.positional.reserve(args.positional.size());
  for (const ExprPtr& arg : args.positional) values.positional.push_back(eval(*arg, scope));
  for (const auto& [name, arg] : args.keyword) values.keyword.emplace_back(name, eval(*arg, scope));
  return values;
}

Value Interpreter::eval_filter(const FilterExpr& expr, Scope& scope, const Value* body) {
  Value input;
  if (expr.operand == nullptr) {
    input = *body;
  } else if (expr.operand->kind == ExprKind::kFilter && body != nullptr) {
    input = eval_filter(static_cast<const FilterExpr&>(*expr.operand), scope, body);
  } else {
    input = eval(*expr.operand, scope);
  }
  const CallArgs args = eval_arguments(expr.args, scope);
  return expr.function(*this, input, args);
}

namespace {

// Dict lookups scan the keys.
size_t lookup_cost(const Value& object) {
  return object.is_dict() ? object.entries().size() : 0;
}

}  // namespace

Value Interpreter::eval_node(const Expr& expr, Scope& scope) {
  switch (expr.kind) {
    case ExprKind::kLiteral:
      return static_cast<const LiteralExpr&>(expr).value;
    case ExprKind::kName: {
      const std::string& name = static_cast<const NameExpr&>(expr).name;
      if (const Value* value = scope.find(name)) return *value;
      return Value::undefined(cat("'", name, "' is undefined"));
    }
    case ExprKind::kList: {
      const auto& node = static_cast<const ListExpr&>(expr);
      std::vector<Value> items;
      items.reserve(node.items.size());
      for (const ExprPtr& item : node.items) items.push_back(eval(*item, scope));
      return Value::from_list(std::move(items), node.tuple);
    }
    case ExprKind::kDict: {
      const auto& node = static_cast<const DictExpr&>(expr);
      std::vector<std::pair<Value, Value>> items;
      items.reserve(node.items.size());
      for (const auto& [key, value] : node.items) {
        Value k = eval(*key, scope);
        items.emplace_back(std::move(k), eval(*value, scope));
      }
      return Value::from_dict(std::move(items));
    }
    case ExprKind::kNot:
      return Value::from_bool(!truthy(eval(*static_cast<const UnaryExpr&>(expr).operand, scope)));
    case ExprKind::kNegate:
      return negate(eval(*static_cast<const UnaryExpr&>(expr).operand, scope));
    case ExprKind::kPlus:
      return unary_plus(eval(*static_cast<const UnaryExpr&>(expr).operand, scope));
    case ExprKind::kBinary: {
      const auto& node = static_cast<const BinaryExpr&>(expr);
      Value left = eval(*node.left, scope);
      return binary_op(*this, node.op, left, eval(*node.right, scope));
    }
    case ExprKind::kAnd: {
      const auto& node = static_cast<const BinaryExpr&>(expr);
      Value left = eval(*node.left, scope);
      return truthy(left) ? eval(*node.right, scope) : left;
    }
    case ExprKind::kOr: {
      const auto& node = static_cast<const BinaryExpr&>(expr);
      Value left = eval(*node.left, scope);
      return truthy(left) ? left : eval(*node.right, scope);
    }
    case ExprKind::kCompare: {
      const auto& node = static_cast<const CompareExpr&>(expr);
      Value left = eval(*node.first, scope);
      for (const auto& [op, operand] : node.rest) {
        Value right = eval(*operand, scope);
        if (!compare(*this, op, left, right)) return Value::from_bool(false);
        left = std::move(right);
      }
      return Value::from_bool(true);
    }
    case ExprKind::kAttribute: {
      const auto& node = static_cast<const AttributeExpr&>(expr);
      Value object = eval(*node.object, scope);
      charge(lookup_cost(object));
      return get_attr(object, node.name);
    }
    case ExprKind::kItem: {
      const auto& node = static_cast<const ItemExpr&>(expr);
      Value object = eval(*node.object, scope);
      charge(lookup_cost(object));
      return get_item(object, eval(*node.key, scope));
    }
    case ExprKind::kSlice: {
      const auto& node = static_cast<const SliceExpr&>(expr);
      Value object = eval(*node.object, scope);
      const Value start = node.start ? eval(*node.start, scope) : Value::none();
      const Value stop = node.stop ? eval(*node.stop, scope) : Value::none();
      const Value step = node.step ? eval(*node.step, scope) : Value::none();
      Value result = get_slice(object, start, stop, step);
      charge(result.is_string() ? result.as_string().size()
             : result.is_list() ? result.items().size()
                                : 0);
      return result;
    }
    case ExprKind::kCall: {
      const auto& node = static_cast<const CallExpr&>(expr);
      Value callee = eval(*node.callee, scope);
      CallArgs args = eval_arguments(node.args, scope);
      return call(callee, args);
    }
    case ExprKind::kFilter:
      return eval_filter(static_cast<const FilterExpr&>(expr), scope, nullptr);
    case ExprKind::kTest: {
      const auto& node = static_cast<const TestExpr&>(expr);
      Value value = eval(*node.operand, scope);
      const CallArgs args = eval_arguments(node.args, scope);
      return Value::from_bool(node.function(*this, value, args));
    }
    case ExprKind::kConditional: {
      const auto& node = static_cast<const ConditionalExpr&>(expr);
      if (truthy(eval(*node.condition, scope))) return eval(*node.then_value, scope);
      if (node.else_value) return eval(*node.else_value, scope);
      return Value::undefined(cat("the inline if-expression on line ", expr.span.line,
                                  " evaluated to false and no else section was defined."));
    }
  }
  TIDAL_FAIL("unknown expression");
}

}  // namespace tidal::jinja
