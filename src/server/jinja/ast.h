// The syntax tree the parser builds and the interpreter walks.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/jinja/ops.h"
#include "server/jinja/value.h"

namespace tidal::jinja {

// Where a node came from, for error messages that quote the failing expression.
struct SourceSpan {
  int line = 1;
  int column = 1;
  size_t begin = 0;
  size_t end = 0;
};

using FilterFunction = Value (*)(Runtime&, const Value& input, const CallArgs& args);
using TestFunction = bool (*)(Runtime&, const Value& input, const CallArgs& args);

enum class ExprKind {
  kLiteral,
  kName,
  kList,
  kDict,
  kNot,
  kNegate,
  kPlus,
  kBinary,
  kAnd,
  kOr,
  kCompare,
  kAttribute,
  kItem,
  kSlice,
  kCall,
  kFilter,
  kTest,
  kConditional,
};

struct Expr {
  explicit Expr(ExprKind k) : kind(k) {}
  virtual ~Expr() = default;
  ExprKind kind;
  SourceSpan span;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct LiteralExpr : Expr {
  LiteralExpr() : Expr(ExprKind::kLiteral) {}
  Value value;
};

struct NameExpr : Expr {
  NameExpr() : Expr(ExprKind::kName) {}
  std::string name;
};

struct ListExpr : Expr {
  ListExpr() : Expr(ExprKind::kList) {}
  std::vector<ExprPtr> items;
  bool tuple = false;
};

struct DictExpr : Expr {
  DictExpr() : Expr(ExprKind::kDict) {}
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

// kNot, kNegate and kPlus.
struct UnaryExpr : Expr {
  explicit UnaryExpr(ExprKind k) : Expr(k) {}
  ExprPtr operand;
};

// kBinary (arithmetic and ~), kAnd and kOr.
struct BinaryExpr : Expr {
  explicit BinaryExpr(ExprKind k) : Expr(k) {}
  BinaryOp op = BinaryOp::kAdd;
  ExprPtr left;
  ExprPtr right;
};

// a < b < c compares pairwise, evaluating b once.
struct CompareExpr : Expr {
  CompareExpr() : Expr(ExprKind::kCompare) {}
  ExprPtr first;
  std::vector<std::pair<CompareOp, ExprPtr>> rest;
};

struct AttributeExpr : Expr {
  AttributeExpr() : Expr(ExprKind::kAttribute) {}
  ExprPtr object;
  std::string name;
};

struct ItemExpr : Expr {
  ItemExpr() : Expr(ExprKind::kItem) {}
  ExprPtr object;
  ExprPtr key;
};

struct SliceExpr : Expr {
  SliceExpr() : Expr(ExprKind::kSlice) {}
  ExprPtr object;
  ExprPtr start;  // each bound may be null
  ExprPtr stop;
  ExprPtr step;
};

struct CallExpr : Expr {
  CallExpr() : Expr(ExprKind::kCall) {}
  ExprPtr callee;
  Arguments args;
};

struct FilterExpr : Expr {
  FilterExpr() : Expr(ExprKind::kFilter) {}
  ExprPtr operand;  // null in `{% filter %}` and `{% set x | f %}`: the rendered body
  std::string name;
  FilterFunction function = nullptr;
  Arguments args;
};

struct TestExpr : Expr {
  TestExpr() : Expr(ExprKind::kTest) {}
  ExprPtr operand;
  std::string name;
  TestFunction function = nullptr;
  Arguments args;
};

struct ConditionalExpr : Expr {
  ConditionalExpr() : Expr(ExprKind::kConditional) {}
  ExprPtr condition;
  ExprPtr then_value;
  ExprPtr else_value;  // null: undefined when the condition fails
};

enum class StmtKind {
  kText,
  kOutput,
  kIf,
  kFor,
  kSet,
  kSetBlock,
  kMacro,
  kFilterBlock,
  kWith,
  kBreak,
  kContinue,
  kScope,  // a body rendered in place, e.g. transformers' {% generation %}
};

struct Stmt {
  explicit Stmt(StmtKind k) : kind(k) {}
  virtual ~Stmt() = default;
  StmtKind kind;
  SourceSpan span;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// What an assignment or loop binds: a name, a tuple of targets, or a namespace attribute.
struct Target {
  std::string name;           // a plain name, or the namespace for `ns.attribute`
  std::string attribute;      // non-empty for `ns.attribute`
  std::vector<Target> items;  // non-empty for a tuple
  bool tuple = false;
};

struct TextStmt : Stmt {
  TextStmt() : Stmt(StmtKind::kText) {}
  std::string text;
};

struct OutputStmt : Stmt {
  OutputStmt() : Stmt(StmtKind::kOutput) {}
  ExprPtr value;
};

struct IfStmt : Stmt {
  IfStmt() : Stmt(StmtKind::kIf) {}
  std::vector<std::pair<ExprPtr, Body>> branches;  // if, then each elif
  Body else_body;
};

struct ForStmt : Stmt {
  ForStmt() : Stmt(StmtKind::kFor) {}
  Target target;
  ExprPtr iterable;
  ExprPtr condition;  // `for x in xs if cond`; may be null
  Body body;
  Body else_body;
};

struct SetStmt : Stmt {
  SetStmt() : Stmt(StmtKind::kSet) {}
  Target target;
  ExprPtr value;
};

struct SetBlockStmt : Stmt {
  SetBlockStmt() : Stmt(StmtKind::kSetBlock) {}
  Target target;
  ExprPtr filter;  // may be null; its innermost operand is null and stands for the body
  Body body;
};

struct MacroStmt : Stmt {
  MacroStmt() : Stmt(StmtKind::kMacro) {}
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> parameters;  // default may be null
  Body body;
};

struct FilterBlockStmt : Stmt {
  FilterBlockStmt() : Stmt(StmtKind::kFilterBlock) {}
  ExprPtr filter;  // innermost operand null: the rendered body
  Body body;
};

struct WithStmt : Stmt {
  WithStmt() : Stmt(StmtKind::kWith) {}
  std::vector<std::pair<Target, ExprPtr>> assignments;
  Body body;
};

struct ScopeStmt : Stmt {
  ScopeStmt() : Stmt(StmtKind::kScope) {}
  Body body;
};

}  // namespace tidal::jinja
