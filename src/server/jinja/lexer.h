// Splits template source into tokens the way Jinja's lexer does, applying whitespace control
// (`{%-`, `-%}`, `+%}`) and the trim_blocks / lstrip_blocks environment settings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tidal::jinja {

enum class TokenType {
  kData,  // literal template text, already whitespace-trimmed
  kVariableBegin,
  kVariableEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,  // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,
  kEnd,
};

struct Token {
  TokenType type = TokenType::kEnd;
  std::string text;
  int64_t integer = 0;
  double floating = 0;
  int line = 1;
  int column = 1;
  // Byte range in the normalized source, for quoting the failing expression in errors.
  size_t begin = 0;
  size_t end = 0;
};

struct LexerOptions {
  bool trim_blocks = true;    // what transformers uses
  bool lstrip_blocks = true;  // what transformers uses
};

// Jinja turns every \r\n and \r into \n and drops one trailing newline before lexing.
std::string normalize_newlines(std::string_view source);

// `source` must already be normalized. Throws tidal::Error naming line and column on bad input.
std::vector<Token> tokenize(std::string_view source, const LexerOptions& options);

}  // namespace tidal::jinja
