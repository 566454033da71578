// Walks the syntax tree: evaluates expressions and renders statements with Jinja's scoping.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/jinja/ast.h"
#include "server/jinja/runtime.h"

namespace tidal::jinja {

// Variables visible at one level: the template, a loop iteration, a macro call, a with block.
// Assignments land in the innermost scope, so a {% set %} inside a loop body does not leak out.
class Scope {
 public:
  explicit Scope(std::shared_ptr<Scope> parent) : parent_(std::move(parent)) {}
  const Value* find(std::string_view name) const;
  void set(std::string_view name, Value value);

 private:
  std::shared_ptr<Scope> parent_;
  std::vector<std::pair<std::string, Value>> variables_;
};

class Interpreter : public Runtime {
 public:
  // `source` is the normalized template text, quoted in error messages.
  Interpreter(std::string_view source, const RenderLimits& limits,
              std::function<std::time_t()> clock);

  std::string render(const Body& body, std::shared_ptr<Scope> scope);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  class DepthGuard;

  Flow exec_body(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  Flow exec(const Stmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out);
  Flow exec_for(const ForStmt& stmt, const std::shared_ptr<Scope>& scope, std::string& out);
  void define_macro(const MacroStmt& stmt, const std::shared_ptr<Scope>& scope);
  Value call_macro(const MacroStmt& stmt, const std::weak_ptr<Scope>& defined_in, CallArgs& args);
  void assign(const Target& target, const Value& value, Scope& scope);
  void write(std::string& out, const Value& value);

  Value eval(const Expr& expr, Scope& scope);
  Value eval_node(const Expr& expr, Scope& scope);
  CallArgs eval_arguments(const Arguments& args, Scope& scope);
  // A filter chain; a null innermost operand stands for `body`.
  Value eval_filter(const FilterExpr& expr, Scope& scope, const Value* body);

  [[noreturn]] void rethrow_located(const SourceSpan& span, bool quote);

  std::string_view source_;
  int depth_ = 0;
};

}  // namespace tidal::jinja
