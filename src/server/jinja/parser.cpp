// Builds the syntax tree from tokens, following Jinja's grammar and operator precedence.
#include "server/jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string>

#include "common/error.h"
#include "server/jinja/builtins.h"

namespace tidal::jinja {
namespace {

// Nesting allowed in expressions and blocks. Each link of an operator or postfix chain counts as
// a level too, because the tree it builds is as deep as the chain is long: this bounds the stack
// that parsing, evaluating and destroying the tree need.
constexpr int kMaxNesting = 200;

constexpr std::string_view kUnsupportedTags[] = {
    "include", "import", "from", "extends", "block", "call", "autoescape", "do", "trans"};

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Body parse_template() {
    Body body = parse_body({});
    if (current().type != TokenType::kEnd) {
      // parse_body only stops early at a block tag named in its end list; the list was empty.
      fail(current(), "unexpected '" + current().text + "'");
    }
    return body;
  }

 private:
  class DepthGuard {
   public:
    DepthGuard(Parser& parser, const Token& at) : parser_(parser) {
      if (++parser_.depth_ > kMaxNesting) {
        parser_.fail(at, cat("template nested deeper than ", kMaxNesting, " levels"));
      }
    }
    ~DepthGuard() { --parser_.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser& parser_;
  };

  // Counts the links of a left-deep chain (a + b + c, x.y.z, v | f | g) as nesting levels.
  class ChainGuard {
   public:
    explicit ChainGuard(Parser& parser) : parser_(parser), saved_(parser.depth_) {}
    ~ChainGuard() { parser_.depth_ = saved_; }
    ChainGuard(const ChainGuard&) = delete;
    ChainGuard& operator=(const ChainGuard&) = delete;
    void extend(const Token& at) {
      if (++parser_.depth_ > kMaxNesting) {
        parser_.fail(at, cat("expression nested deeper than ", kMaxNesting, " levels"));
      }
    }

   private:
    Parser& parser_;
    int saved_;
  };

  // ---- token stream ----

  const Token& current() const { return tokens_[pos_]; }
  const Token& peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& advance() {
    const Token& token = tokens_[pos_];
    last_end_ = token.end;
    if (token.type != TokenType::kEnd) ++pos_;
    return token;
  }

  bool is_operator(std::string_view op) const {
    return current().type == TokenType::kOperator && current().text == op;
  }
  bool is_name(std::string_view name) const {
    return current().type == TokenType::kName && current().text == name;
  }
  bool skip_operator(std::string_view op) {
    if (!is_operator(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  static std::string describe(const Token& token) {
    switch (token.type) {
      case TokenType::kEnd:
        return "end of template";
      case TokenType::kBlockEnd:
        return "end of statement block";
      case TokenType::kVariableEnd:
        return "end of print statement";
      case TokenType::kBlockBegin:
        return "begin of statement block";
      case TokenType::kVariableBegin:
        return "begin of print statement";
      case TokenType::kData:
        return "template data";
      case TokenType::kString:
        return "string literal";
      default:
        return "'" + token.text + "'";
    }
  }

  [[noreturn]] void fail(const Token& at, const std::string& message) const {
    TIDAL_FAIL("template syntax error at line ", at.line, ", column ", at.column, ": ", message);
  }

  void expect_operator(std::string_view op) {
    if (!skip_operator(op)) fail(current(), cat("expected '", op, "', got ", describe(current())));
  }
  const Token& expect_name() {
    if (current().type != TokenType::kName) {
      fail(current(), "expected a name, got " + describe(current()));
    }
    return advance();
  }
  void expect_block_end(std::string_view statement) {
    if (current().type != TokenType::kBlockEnd) {
      fail(current(),
           cat("expected end of '", statement, "' statement, got ", describe(current())));
    }
    advance();
  }

  template <typename Node>
  std::unique_ptr<Node> start(const Token& at, Node* node) {
    node->span.line = at.line;
    node->span.column = at.column;
    node->span.begin = at.begin;
    return std::unique_ptr<Node>(node);
  }
  template <typename Node>
  std::unique_ptr<Node> start_at(const SourceSpan& at, Node* node) {
    node->span = at;
    return std::unique_ptr<Node>(node);
  }
  void finish(Expr& node) { node.span.end = std::max(last_end_, node.span.begin); }

  // ---- statements ----

  // Parses until a block tag whose name is in `end_names`, leaving the stream on that name.
  Body parse_body(std::initializer_list<std::string_view> end_names, const Token* opener = nullptr,
                  std::string_view block = {}) {
    Body body;
    while (true) {
      const Token& token = current();
      switch (token.type) {
        case TokenType::kEnd:
          if (opener != nullptr) {
            std::string wanted;
            for (std::string_view name : end_names) {
              wanted += wanted.empty() ? "" : " or ";
              wanted += cat("'", name, "'");
            }
            fail(*opener, cat("unterminated '", block,
                              "' block: reached the end of the template "
                              "looking for ",
                              wanted));
          }
          return body;
        case TokenType::kData: {
          auto text = start(token, new TextStmt());
          text->text = token.text;
          advance();
          body.push_back(std::move(text));
          break;
        }
        case TokenType::kVariableBegin: {
          advance();
          auto output = start(token, new OutputStmt());
          output->value = parse_tuple(true);
          if (current().type != TokenType::kVariableEnd) {
            fail(current(), "expected end of print statement '}}', got " + describe(current()));
          }
          advance();
          body.push_back(std::move(output));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name = peek();
          if (name.type == TokenType::kName &&
              std::find(end_names.begin(), end_names.end(), name.text) != end_names.end()) {
            advance();
            return body;
          }
          advance();
          body.push_back(parse_statement(token));
          break;
        }
        default:
          fail(token, "unexpected " + describe(token));
      }
    }
  }

  // Consumes the end tag the body stopped at.
  void finish_block() { expect_block_end(advance().text); }

  StmtPtr parse_statement(const Token& open) {
    DepthGuard guard(*this, open);
    if (current().type != TokenType::kName) fail(current(), "tag name expected");
    const Token& keyword = current();
    const std::string& name = keyword.text;
    if (name == "if") return parse_if(open);
    if (name == "for") return parse_for(open);
    if (name == "set") return parse_set(open);
    if (name == "macro") return parse_macro(open);
    if (name == "filter") return parse_filter_block(open);
    if (name == "with") return parse_with(open);
    if (name == "print") {
      advance();
      auto output = start(open, new OutputStmt());
      output->value = parse_tuple(true);
      expect_block_end("print");
      return output;
    }
    if (name == "generation") {
      advance();
      expect_block_end("generation");
      auto scope = start(open, new ScopeStmt());
      scope->body = parse_body({"endgeneration"}, &open, "generation");
      finish_block();
      return scope;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(keyword, cat("'", name, "' outside of a loop"));
      advance();
      expect_block_end(name);
      return start(open, new Stmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue));
    }
    for (std::string_view tag : kUnsupportedTags) {
      if (name == tag) fail(keyword, cat("unsupported tag '", name, "'"));
    }
    if (name.starts_with("end") || name == "elif" || name == "else") {
      fail(keyword, cat("unexpected tag '", name, "': no open block expects it"));
    }
    fail(keyword, cat("unsupported tag '", name, "'"));
  }

  StmtPtr parse_if(const Token& open) {
    advance();
    auto node = start(open, new IfStmt());
    ExprPtr condition = parse_tuple(false);
    while (true) {
      expect_block_end("if");
      Body body = parse_body({"elif", "else", "endif"}, &open, "if");
      node->branches.emplace_back(std::move(condition), std::move(body));
      const std::string name = advance().text;
      if (name == "elif") {
        condition = parse_tuple(false);
        continue;
      }
      if (name == "else") {
        expect_block_end("else");
        node->else_body = parse_body({"endif"}, &open, "if");
        finish_block();
      } else {
        expect_block_end("endif");
      }
      return node;
    }
  }

  StmtPtr parse_for(const Token& open) {
    advance();
    auto node = start(open, new ForStmt());
    node->target = parse_target_list({"in"});
    if (!skip_name("in")) fail(current(), "expected 'in', got " + describe(current()));
    node->iterable = parse_tuple(false, {"recursive", "if"});
    if (skip_name("if")) node->condition = parse_expression(true);
    if (is_name("recursive")) fail(current(), "recursive for loops are not supported");
    expect_block_end("for");
    ++loop_depth_;
    node->body = parse_body({"endfor", "else"}, &open, "for");
    --loop_depth_;
    if (advance().text == "else") {
      expect_block_end("else");
      node->else_body = parse_body({"endfor"}, &open, "for");
      finish_block();
    } else {
      expect_block_end("endfor");
    }
    return node;
  }

  StmtPtr parse_set(const Token& open) {
    advance();
    Target target;
    if (current().type == TokenType::kName && peek().type == TokenType::kOperator &&
        peek().text == ".") {
      target.name = advance().text;
      advance();
      target.attribute = expect_name().text;
    } else {
      target = parse_target_list({});
    }
    if (skip_operator("=")) {
      auto node = start(open, new SetStmt());
      node->target = std::move(target);
      node->value = parse_tuple(true);
      expect_block_end("set");
      return node;
    }
    auto node = start(open, new SetBlockStmt());
    node->target = std::move(target);
    if (is_operator("|")) node->filter = parse_filter_chain(nullptr, current());
    expect_block_end("set");
    // A block set inside a loop body assigns within that iteration, like any set.
    node->body = parse_body({"endset"}, &open, "set");
    finish_block();
    return node;
  }

  StmtPtr parse_macro(const Token& open) {
    advance();
    auto node = start(open, new MacroStmt());
    node->name = expect_name().text;
    expect_operator("(");
    while (!is_operator(")")) {
      if (!node->parameters.empty()) expect_operator(",");
      if (is_operator(")")) break;
      std::string parameter = expect_name().text;
      ExprPtr fallback;
      if (skip_operator("=")) fallback = parse_expression(true);
      node->parameters.emplace_back(std::move(parameter), std::move(fallback));
    }
    expect_operator(")");
    expect_block_end("macro");
    // Loop controls inside a macro cannot reach a loop around the macro.
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    node->body = parse_body({"endmacro"}, &open, "macro");
    loop_depth_ = saved_loops;
    finish_block();
    return node;
  }

  StmtPtr parse_filter_block(const Token& open) {
    const Token& keyword = advance();
    auto node = start(open, new FilterBlockStmt());
    node->filter = parse_filter_chain(nullptr, keyword, true);
    expect_block_end("filter");
    node->body = parse_body({"endfilter"}, &open, "filter");
    finish_block();
    return node;
  }

  StmtPtr parse_with(const Token& open) {
    advance();
    auto node = start(open, new WithStmt());
    while (current().type != TokenType::kBlockEnd) {
      if (!node->assignments.empty()) expect_operator(",");
      Target target = parse_target_list({});
      expect_operator("=");
      node->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    expect_block_end("with");
    node->body = parse_body({"endwith"}, &open, "with");
    finish_block();
    return node;
  }

  // name, (a, b), or a, b — what a loop or assignment binds.
  Target parse_target_list(std::initializer_list<std::string_view> end_names) {
    Target first = parse_target();
    if (!is_operator(",")) return first;
    Target tuple;
    tuple.tuple = true;
    tuple.items.push_back(std::move(first));
    while (skip_operator(",")) {
      if (current().type == TokenType::kBlockEnd || is_operator("=") ||
          (current().type == TokenType::kName &&
           std::find(end_names.begin(), end_names.end(), current().text) != end_names.end())) {
        break;
      }
      tuple.items.push_back(parse_target());
    }
    return tuple;
  }

  Target parse_target() {
    DepthGuard guard(*this, current());
    if (skip_operator("(")) {
      Target tuple;
      tuple.tuple = true;
      while (!is_operator(")")) {
        if (!tuple.items.empty()) expect_operator(",");
        if (is_operator(")")) break;
        tuple.items.push_back(parse_target());
      }
      expect_operator(")");
      if (tuple.items.size() == 1 && !tuple.items[0].tuple) return std::move(tuple.items[0]);
      return tuple;
    }
    const Token& name = expect_name();
    if (name.text == "true" || name.text == "false" || name.text == "none" || name.text == "True" ||
        name.text == "False" || name.text == "None") {
      fail(name, cat("cannot assign to '", name.text, "'"));
    }
    Target target;
    target.name = name.text;
    return target;
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<std::string_view> extra_end) const {
    const Token& token = current();
    if (token.type == TokenType::kVariableEnd || token.type == TokenType::kBlockEnd ||
        (token.type == TokenType::kOperator && token.text == ")")) {
      return true;
    }
    return token.type == TokenType::kName &&
           std::find(extra_end.begin(), extra_end.end(), token.text) != extra_end.end();
  }

  // Comma-separated expressions form a tuple: {{ a, b }} and `for x in a, b`.
  ExprPtr parse_tuple(bool with_condition, std::initializer_list<std::string_view> extra_end = {},
                      bool parenthesized = false) {
    const Token& first = current();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_operator(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condition));
      if (is_operator(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!parenthesized) fail(current(), "expected an expression, got " + describe(current()));
    }
    auto tuple = start(first, new ListExpr());
    tuple->items = std::move(items);
    tuple->tuple = true;
    finish(*tuple);
    return tuple;
  }

  ExprPtr parse_expression(bool with_condition) {
    DepthGuard guard(*this, current());
    if (!with_condition) return parse_or();
    const Token& first = current();
    ExprPtr value = parse_or();
    ChainGuard chain(*this);
    while (is_name("if")) {
      chain.extend(advance());
      auto node = start(first, new ConditionalExpr());
      node->then_value = std::move(value);
      node->condition = parse_or();
      if (skip_name("else")) node->else_value = parse_expression(true);
      finish(*node);
      value = std::move(node);
    }
    return value;
  }

  ExprPtr parse_or() {
    const Token& first = current();
    ExprPtr left = parse_and();
    ChainGuard chain(*this);
    while (is_name("or")) {
      chain.extend(advance());
      auto node = start(first, new BinaryExpr(ExprKind::kOr));
      node->left = std::move(left);
      node->right = parse_and();
      finish(*node);
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_and() {
    const Token& first = current();
    ExprPtr left = parse_not();
    ChainGuard chain(*this);
    while (is_name("and")) {
      chain.extend(advance());
      auto node = start(first, new BinaryExpr(ExprKind::kAnd));
      node->left = std::move(left);
      node->right = parse_not();
      finish(*node);
      left = std::move(node);
    }
    return left;
  }

  ExprPtr parse_not() {
    const Token& first = current();
    if (skip_name("not")) {
      DepthGuard guard(*this, first);
      auto node = start(first, new UnaryExpr(ExprKind::kNot));
      node->operand = parse_not();
      finish(*node);
      return node;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& first = current();
    ExprPtr left = parse_math1();
    std::vector<std::pair<CompareOp, ExprPtr>> rest;
    ChainGuard chain(*this);
    while (true) {
      CompareOp op;
      const Token& token = current();
      if (token.type == TokenType::kOperator && token.text == "==") {
        op = CompareOp::kEq;
      } else if (token.type == TokenType::kOperator && token.text == "!=") {
        op = CompareOp::kNe;
      } else if (token.type == TokenType::kOperator && token.text == "<") {
        op = CompareOp::kLt;
      } else if (token.type == TokenType::kOperator && token.text == "<=") {
        op = CompareOp::kLe;
      } else if (token.type == TokenType::kOperator && token.text == ">") {
        op = CompareOp::kGt;
      } else if (token.type == TokenType::kOperator && token.text == ">=") {
        op = CompareOp::kGe;
      } else if (is_name("in")) {
        op = CompareOp::kIn;
      } else if (is_name("not") && peek().type == TokenType::kName && peek().text == "in") {
        advance();
        op = CompareOp::kNotIn;
      } else {
        break;
      }
      chain.extend(advance());
      rest.emplace_back(op, parse_math1());
    }
    if (rest.empty()) return left;
    auto node = start(first, new CompareExpr());
    node->first = std::move(left);
    node->rest = std::move(rest);
    finish(*node);
    return node;
  }

  ExprPtr binary(const Token& first, BinaryOp op, ExprPtr left, ExprPtr right) {
    auto node = start(first, new BinaryExpr(ExprKind::kBinary));
    node->op = op;
    node->left = std::move(left);
    node->right = std::move(right);
    finish(*node);
    return node;
  }

  ExprPtr parse_math1() {
    const Token& first = current();
    ExprPtr left = parse_concat();
    ChainGuard chain(*this);
    while (is_operator("+") || is_operator("-")) {
      chain.extend(current());
      const BinaryOp op = advance().text == "+" ? BinaryOp::kAdd : BinaryOp::kSub;
      left = binary(first, op, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    const Token& first = current();
    ExprPtr left = parse_math2();
    ChainGuard chain(*this);
    while (is_operator("~")) {
      chain.extend(advance());
      left = binary(first, BinaryOp::kConcat, std::move(left), parse_math2());
    }
    return left;
  }

  ExprPtr parse_math2() {
    const Token& first = current();
    ExprPtr left = parse_pow();
    ChainGuard chain(*this);
    while (true) {
      BinaryOp op;
      if (is_operator("*")) {
        op = BinaryOp::kMul;
      } else if (is_operator("/")) {
        op = BinaryOp::kDiv;
      } else if (is_operator("//")) {
        op = BinaryOp::kFloorDiv;
      } else if (is_operator("%")) {
        op = BinaryOp::kMod;
      } else {
        return left;
      }
      chain.extend(advance());
      left = binary(first, op, std::move(left), parse_pow());
    }
  }

  // Jinja's ** is left-associative, unlike Python's.
  ExprPtr parse_pow() {
    const Token& first = current();
    ExprPtr left = parse_unary(true);
    ChainGuard chain(*this);
    while (is_operator("**")) {
      chain.extend(advance());
      left = binary(first, BinaryOp::kPow, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    const Token& first = current();
    DepthGuard guard(*this, first);
    ExprPtr node;
    if (is_operator("-") || is_operator("+")) {
      const bool negate = advance().text == "-";
      auto unary = start(first, new UnaryExpr(negate ? ExprKind::kNegate : ExprKind::kPlus));
      unary->operand = parse_unary(false);
      finish(*unary);
      node = std::move(unary);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node), first);
    if (with_filter) node = parse_filter_and_test(std::move(node), first);
    return node;
  }

  ExprPtr constant(const Token& token, Value value) {
    auto literal = start(token, new LiteralExpr());
    literal->value = std::move(value);
    finish(*literal);
    return literal;
  }

  ExprPtr parse_primary() {
    const Token& token = current();
    switch (token.type) {
      case TokenType::kName: {
        advance();
        if (token.text == "true" || token.text == "True")
          return constant(token, Value::from_bool(true));
        if (token.text == "false" || token.text == "False") {
          return constant(token, Value::from_bool(false));
        }
        if (token.text == "none" || token.text == "None") return constant(token, Value::none());
        auto name = start(token, new NameExpr());
        name->name = token.text;
        finish(*name);
        return name;
      }
      case TokenType::kString: {
        // Adjacent string literals concatenate, as in Python.
        std::string text;
        while (current().type == TokenType::kString) text += advance().text;
        return constant(token, Value::from_string(std::move(text)));
      }
      case TokenType::kInteger:
        advance();
        return constant(token, Value::from_int(token.integer));
      case TokenType::kFloat:
        advance();
        return constant(token, Value::from_float(token.floating));
      case TokenType::kOperator:
        if (token.text == "(") {
          advance();
          ExprPtr inner = parse_tuple(true, {}, true);
          expect_operator(")");
          return inner;
        }
        if (token.text == "[") return parse_list();
        if (token.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail(token, "unexpected " + describe(token));
  }

  ExprPtr parse_list() {
    const Token& open = advance();
    auto list = start(open, new ListExpr());
    while (!is_operator("]")) {
      if (!list->items.empty()) expect_operator(",");
      if (is_operator("]")) break;
      list->items.push_back(parse_expression(true));
    }
    expect_operator("]");
    finish(*list);
    return list;
  }

  ExprPtr parse_dict() {
    const Token& open = advance();
    auto dict = start(open, new DictExpr());
    while (!is_operator("}")) {
      if (!dict->items.empty()) expect_operator(",");
      if (is_operator("}")) break;
      ExprPtr key = parse_expression(true);
      expect_operator(":");
      dict->items.emplace_back(std::move(key), parse_expression(true));
    }
    expect_operator("}");
    finish(*dict);
    return dict;
  }

  ExprPtr parse_postfix(ExprPtr node, const Token& first) {
    ChainGuard chain(*this);
    while (is_operator(".") || is_operator("[") || is_operator("(")) {
      chain.extend(current());
      node = is_operator("(") ? parse_call(std::move(node), first)
                              : parse_subscript(std::move(node), first);
    }
    return node;
  }

  ExprPtr parse_filter_and_test(ExprPtr node, const Token& first) {
    ChainGuard chain(*this);
    while (is_operator("|") || is_name("is") || is_operator("(")) {
      chain.extend(current());
      if (is_operator("|")) {
        node = parse_filter_chain(std::move(node), first);
      } else if (is_name("is")) {
        node = parse_test(std::move(node), first);
      } else {
        node = parse_call(std::move(node), first);
      }
    }
    return node;
  }

  ExprPtr parse_subscript(ExprPtr object, const Token& first) {
    if (skip_operator(".")) {
      const Token& attribute = current();
      if (attribute.type == TokenType::kName) {
        advance();
        auto node = start(first, new AttributeExpr());
        node->object = std::move(object);
        node->name = attribute.text;
        finish(*node);
        return node;
      }
      if (attribute.type != TokenType::kInteger) {
        fail(attribute, "expected a name or number after '.', got " + describe(attribute));
      }
      advance();
      ExprPtr key = constant(attribute, Value::from_int(attribute.integer));
      auto node = start(first, new ItemExpr());
      node->object = std::move(object);
      node->key = std::move(key);
      finish(*node);
      return node;
    }
    expect_operator("[");
    std::vector<ExprPtr> keys;
    const Token& key_start = current();
    while (!is_operator("]")) {
      if (!keys.empty()) expect_operator(",");
      if (is_operator(":")) {
        keys.push_back(nullptr);
      } else {
        keys.push_back(parse_expression(true));
      }
      if (is_operator(":")) {
        // A slice: start:stop:step, each part optional.
        if (keys.size() != 1) fail(current(), "slices inside tuple subscripts are not supported");
        advance();
        auto slice = start(first, new SliceExpr());
        slice->object = std::move(object);
        slice->start = std::move(keys[0]);
        if (!is_operator(":") && !is_operator("]")) slice->stop = parse_expression(true);
        if (skip_operator(":") && !is_operator("]")) slice->step = parse_expression(true);
        expect_operator("]");
        finish(*slice);
        return slice;
      }
      if (keys.back() == nullptr) fail(current(), "expected an expression");
    }
    expect_operator("]");
    if (keys.empty()) fail(current(), "expected a subscript");
    auto node = start(first, new ItemExpr());
    node->object = std::move(object);
    if (keys.size() == 1) {
      node->key = std::move(keys[0]);
    } else {
      auto tuple = start(key_start, new ListExpr());
      tuple->items = std::move(keys);
      tuple->tuple = true;
      finish(*tuple);
      node->key = std::move(tuple);
    }
    finish(*node);
    return node;
  }

  Arguments parse_arguments() {
    expect_operator("(");
    Arguments args;
    bool need_comma = false;
    while (!is_operator(")")) {
      if (need_comma) {
        expect_operator(",");
        if (is_operator(")")) break;
      }
      if (is_operator("*") || is_operator("**")) {
        fail(current(), "*args and **kwargs in calls are not supported");
      }
      if (current().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().text == "=") {
        std::string key = advance().text;
        advance();
        args.keyword.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!args.keyword.empty()) fail(current(), "positional argument after keyword argument");
        args.positional.push_back(parse_expression(true));
      }
      need_comma = true;
    }
    expect_operator(")");
    return args;
  }

  ExprPtr parse_call(ExprPtr callee, const Token& first) {
    auto node = start(first, new CallExpr());
    node->callee = std::move(callee);
    node->args = parse_arguments();
    finish(*node);
    return node;
  }

  std::string dotted_name() {
    std::string name = expect_name().text;
    while (skip_operator(".")) name += "." + expect_name().text;
    return name;
  }

  // `| name(args) | name ...`; with `inline_first` the first filter has no leading pipe.
  ExprPtr parse_filter_chain(ExprPtr operand, const Token& first, bool inline_first = false) {
    ChainGuard chain(*this);
    while (inline_first || is_operator("|")) {
      chain.extend(current());
      if (!inline_first) advance();
      inline_first = false;
      const Token& name_token = current();
      auto node = start(first, new FilterExpr());
      node->operand = std::move(operand);
      node->name = dotted_name();
      node->function = find_filter(node->name);
      if (node->function == nullptr) fail(name_token, cat("unknown filter '", node->name, "'"));
      if (is_operator("(")) node->args = parse_arguments();
      finish(*node);
      operand = std::move(node);
    }
    return operand;
  }

  ExprPtr parse_test(ExprPtr operand, const Token& first) {
    advance();  // is
    const bool negated = skip_name("not");
    const Token& name_token = current();
    auto node = start(first, new TestExpr());
    node->operand = std::move(operand);
    node->name = dotted_name();
    node->function = find_test(node->name);
    if (node->function == nullptr) fail(name_token, cat("unknown test '", node->name, "'"));
    const Token& next = current();
    if (is_operator("(")) {
      node->args = parse_arguments();
    } else if ((next.type == TokenType::kName || next.type == TokenType::kString ||
                next.type == TokenType::kInteger || next.type == TokenType::kFloat ||
                is_operator("[") || is_operator("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
      // `x is divisibleby 3`, `x is sameas none`: one bare argument.
      if (is_name("is")) fail(next, "tests cannot be chained with 'is'");
      ExprPtr argument = parse_primary();
      node->args.positional.push_back(parse_postfix(std::move(argument), next));
    }
    finish(*node);
    if (!negated) return node;
    auto negation = start(first, new UnaryExpr(ExprKind::kNot));
    negation->operand = std::move(node);
    finish(*negation);
    return negation;
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  size_t last_end_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens) {
  return Parser(tokens).parse_template();
}

}  // namespace tidal::jinja
