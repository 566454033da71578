// Splits template source into tokens the way Jinja's lexer does, applying whitespace control
// (`{%-`, `-%}`, `+%}`) and the trim_blocks / lstrip_blocks environment settings.
#include "server/jinja/lexer.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "common/error.h"
#include "server/jinja/unicode.h"

namespace tidal::jinja {
namespace {

bool is_digit_char(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit_char(c);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  Lexer(std::string_view source, const LexerOptions& options) : src_(source), options_(options) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = find_tag_start(pos);
      if (tag == std::string_view::npos) {
        emit_data(pos, src_.substr(pos));
        break;
      }
      const char kind = src_[tag + 1];
      size_t after = tag + 2;
      char sign = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      size_t raw_end = 0;
      const bool raw = kind == '%' && match_raw_begin(after, raw_end);
      std::string_view text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text = strip(text, nullptr, false, true);
      } else if (sign != '+' && options_.lstrip_blocks && kind != '{') {
        text = lstrip_line(text, line_starting);
      }
      emit_data(pos, text);
      if (raw) {
        pos = lex_raw(raw_end, line_starting);
      } else if (kind == '#') {
        pos = lex_comment(tag, after, line_starting);
      } else {
        pos = lex_tag(tag, after, kind == '%', line_starting);
      }
    }
    Token end;
    end.type = TokenType::kEnd;
    locate(end, src_.size(), src_.size());
    tokens_.push_back(end);
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(size_t offset, const std::string& message) const {
    const auto [line, column] = position(offset);
    TIDAL_FAIL("template syntax error at line ", line, ", column ", column, ": ", message);
  }

  std::pair<int, int> position(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const auto line = static_cast<int>(it - line_starts_.begin());
    const size_t start = line_starts_[static_cast<size_t>(line - 1)];
    return {line, static_cast<int>(offset - start) + 1};
  }

  void locate(Token& token, size_t begin, size_t end) const {
    const auto [line, column] = position(begin);
    token.line = line;
    token.column = column;
    token.begin = begin;
    token.end = end;
  }

  void push(TokenType type, size_t begin, size_t end, std::string text) {
    Token token;
    token.type = type;
    token.text = std::move(text);
    locate(token, begin, end);
    tokens_.push_back(std::move(token));
  }

  void emit_data(size_t begin, std::string_view text) {
    if (!text.empty()) push(TokenType::kData, begin, begin + text.size(), std::string(text));
  }

  size_t find_tag_start(size_t pos) const {
    while (true) {
      pos = src_.find('{', pos);
      if (pos == std::string_view::npos || pos + 1 >= src_.size()) return std::string_view::npos;
      const char next = src_[pos + 1];
      if (next == '{' || next == '%' || next == '#') return pos;
      ++pos;
    }
  }

  // lstrip_blocks: drop the spaces that are alone on the line before a block or comment tag.
  std::string_view lstrip_line(std::string_view text, bool line_starting) const {
    const size_t newline = text.rfind('\n');
    const size_t line_begin = newline == std::string_view::npos ? 0 : newline + 1;
    if (line_begin == 0 && !line_starting) return text;
    const std::string_view tail = text.substr(line_begin);
    if (tail.empty() || !strip(tail, nullptr, true, false).empty()) return text;
    return text.substr(0, line_begin);
  }

  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      size_t next = pos;
      if (!is_space(next_code_point(src_, next))) break;
      pos = next;
    }
    return pos;
  }

  // Matches `\s*raw\s*(-%}\s*|%})` after `{%`; sets `end` past it.
  bool match_raw_begin(size_t pos, size_t& end) const {
    pos = skip_space(pos);
    if (src_.substr(pos, 3) != "raw") return false;
    pos = skip_space(pos + 3);
    if (src_.substr(pos, 3) == "-%}") {
      end = skip_space(pos + 3);
      return true;
    }
    if (src_.substr(pos, 2) == "%}") {
      end = pos + 2;
      return true;
    }
    return false;
  }

  // The end of a block or comment tag at `pos` (`+%}`, `-%}` then whitespace, or `%}` then one
  // newline under trim_blocks); 0 when there is none.
  size_t match_block_end(size_t pos, char close) const {
    const char end_text[3] = {close, '}', 0};
    if (pos + 2 < src_.size() && (src_[pos] == '+' || src_[pos] == '-') &&
        src_.substr(pos + 1, 2) == end_text) {
      return src_[pos] == '-' ? skip_space(pos + 3) : pos + 3;
    }
    if (src_.substr(pos, 2) == end_text) {
      size_t end = pos + 2;
      if (options_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
      return end;
    }
    return 0;
  }

  size_t lex_comment(size_t tag, size_t body, bool& line_starting) {
    size_t close = src_.find("#}", body);
    if (close == std::string_view::npos) fail(tag, "missing end of comment tag");
    size_t end = 0;
    if (close > body && (src_[close - 1] == '-' || src_[close - 1] == '+')) {
      end = match_block_end(close - 1, '#');
    } else {
      end = match_block_end(close, '#');
    }
    line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_raw(size_t pos, bool& line_starting) {
    line_starting = src_[pos - 1] == '\n';
    size_t search = pos;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string_view::npos) fail(pos, "missing end of raw directive");
      size_t cursor = open + 2;
      char sign = 0;
      if (cursor < src_.size() && (src_[cursor] == '-' || src_[cursor] == '+'))
        sign = src_[cursor++];
      cursor = skip_space(cursor);
      if (src_.substr(cursor, 6) != "endraw") {
        search = open + 1;
        continue;
      }
      cursor = skip_space(cursor + 6);
      const size_t end = match_block_end(cursor, '%');
      if (end == 0) {
        search = open + 1;
        continue;
      }
      std::string_view text = src_.substr(pos, open - pos);
      if (sign == '-') {
        text = strip(text, nullptr, false, true);
      } else if (sign != '+' && options_.lstrip_blocks) {
        text = lstrip_line(text, line_starting);
      }
      emit_data(pos, text);
      line_starting = src_[end - 1] == '\n';
      return end;
    }
  }

  size_t lex_tag(size_t tag, size_t pos, bool block, bool& line_starting) {
    push(block ? TokenType::kBlockBegin : TokenType::kVariableBegin, tag, pos,
         std::string(src_.substr(tag, pos - tag)));
    std::vector<char> balance;
    while (true) {
      if (pos >= src_.size()) {
        fail(tag, block ? "unterminated block tag '{%': missing '%}'"
                        : "unterminated expression '{{': missing '}}'");
      }
      if (balance.empty()) {
        size_t end = 0;
        if (block) {
          end = match_block_end(pos, '%');
        } else if (src_.substr(pos, 3) == "-}}") {
          end = skip_space(pos + 3);
        } else if (src_.substr(pos, 2) == "}}") {
          end = pos + 2;
        }
        if (end != 0) {
          push(block ? TokenType::kBlockEnd : TokenType::kVariableEnd, pos, end,
               std::string(src_.substr(pos, end - pos)));
          line_starting = src_[end - 1] == '\n';
          return end;
        }
      }
      const size_t spaced = skip_space(pos);
      if (spaced != pos) {
        pos = spaced;
        continue;
      }
      pos = lex_one(pos, balance);
    }
  }

  size_t lex_one(size_t pos, std::vector<char>& balance) {
    const char c = src_[pos];
    if (is_digit_char(c)) return lex_number(pos);
    if (is_name_start(c)) {
      size_t end = pos;
      while (end < src_.size() && is_name_char(src_[end])) ++end;
      push(TokenType::kName, pos, end, std::string(src_.substr(pos, end - pos)));
      return end;
    }
    if (c == '\'' || c == '"') return lex_string(pos);
    static constexpr std::string_view kTwoChar[] = {"//", "**", "==", "!=", ">=", "<="};
    for (std::string_view op : kTwoChar) {
      if (src_.substr(pos, 2) == op) {
        push(TokenType::kOperator, pos, pos + 2, std::string(op));
        return pos + 2;
      }
    }
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      size_t next = pos;
      next_code_point(src_, next);
      std::string_view shown = src_.substr(pos, next - pos);
      if (next == pos + 1 && static_cast<unsigned char>(c) >= 0x80) {
        fail(pos, cat("invalid UTF-8 byte ", static_cast<int>(static_cast<unsigned char>(c))));
      }
      fail(pos, cat("unexpected character '", shown, "'"));
    }
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) fail(pos, cat("unexpected '", c, "'"));
      if (balance.back() != c)
        fail(pos, cat("unexpected '", c, "', expected '", balance.back(), "'"));
      balance.pop_back();
    }
    push(TokenType::kOperator, pos, pos + 1, std::string(1, c));
    return pos + 1;
  }

  // Digits with single underscores between them, as Python and Jinja allow.
  size_t scan_digits(size_t pos, int base) const {
    auto is_base_digit = [&](char ch) {
      const int v = hex_value(ch);
      return v >= 0 && v < base;
    };
    if (pos >= src_.size() || !is_base_digit(src_[pos])) return pos;
    ++pos;
    while (pos < src_.size()) {
      if (is_base_digit(src_[pos])) {
        ++pos;
      } else if (src_[pos] == '_' && pos + 1 < src_.size() && is_base_digit(src_[pos + 1])) {
        pos += 2;
      } else {
        break;
      }
    }
    return pos;
  }

  size_t lex_number(size_t pos) {
    // A float needs a fraction or an exponent; anything else is an integer.
    size_t end = scan_digits(pos, 10);
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && is_digit_char(src_[end + 1])) {
      end = scan_digits(end + 1, 10);
      is_float = true;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t exponent = end + 1;
      if (exponent < src_.size() && (src_[exponent] == '+' || src_[exponent] == '-')) ++exponent;
      const size_t exponent_end = scan_digits(exponent, 10);
      if (exponent_end != exponent) {
        end = exponent_end;
        is_float = true;
      }
    }
    std::string digits;
    auto collect = [&](size_t from, size_t to) {
      for (size_t i = from; i < to; ++i) {
        if (src_[i] != '_') digits.push_back(src_[i]);
      }
    };
    Token token;
    if (is_float) {
      collect(pos, end);
      token.type = TokenType::kFloat;
      token.floating = std::strtod(digits.c_str(), nullptr);
    } else {
      int base = 10;
      size_t digits_begin = pos;
      if (src_[pos] == '0' && pos + 1 < src_.size()) {
        const char prefix = static_cast<char>(src_[pos + 1] | 0x20);
        base = prefix == 'x' ? 16 : prefix == 'o' ? 8 : prefix == 'b' ? 2 : 10;
      }
      if (base != 10) {
        // The prefix may be followed by an underscore: 0x_ff.
        digits_begin = pos + 2;
        if (digits_begin < src_.size() && src_[digits_begin] == '_') ++digits_begin;
        end = scan_digits(digits_begin, base);
        if (end == digits_begin) fail(pos, "invalid integer literal");
      } else if (src_[pos] == '0') {
        // Python refuses leading zeros; Jinja lexes 0 then fails on what follows.
        end = pos + 1;
        while (end + 1 < src_.size() &&
               (src_[end] == '0' || (src_[end] == '_' && src_[end + 1] == '0'))) {
          end += src_[end] == '_' ? 2 : 1;
        }
        if (end < src_.size() && src_[end] == '0') ++end;
      }
      collect(digits_begin, end);
      token.type = TokenType::kInteger;
      uint64_t value = 0;
      const auto result =
          std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
      if (result.ec != std::errc() || value > static_cast<uint64_t>(INT64_MAX)) {
        fail(pos, "integer literal too large");
      }
      token.integer = static_cast<int64_t>(value);
    }
    token.text = std::string(src_.substr(pos, end - pos));
    locate(token, pos, end);
    tokens_.push_back(std::move(token));
    return end;
  }

  // Python's unicode-escape decoding, which Jinja applies to string literals.
  size_t lex_string(size_t pos) {
    const char quote = src_[pos];
    std::string value;
    size_t i = pos + 1;
    while (true) {
      if (i >= src_.size()) fail(pos, "unterminated string literal");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        value.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) fail(pos, "unterminated string literal");
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case 'a':
          value.push_back('\a');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t count = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t code_point = 0;
          for (size_t k = 0; k < count; ++k) {
            const int digit = i + k < src_.size() ? hex_value(src_[i + k]) : -1;
            if (digit < 0) fail(i - 2, cat("truncated \\", e, " escape in string literal"));
            code_point = code_point * 16 + static_cast<uint32_t>(digit);
          }
          if (code_point > 0x10FFFF) fail(i - 2, "illegal Unicode character in string literal");
          append_utf8(value, code_point);
          i += count;
          break;
        }
        case 'N':
          fail(i - 2, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t code_point = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              code_point = code_point * 8 + static_cast<uint32_t>(src_[i++] - '0');
            }
            append_utf8(value, code_point);
          } else {
            // Unknown escapes keep their backslash, as in Python.
            value.push_back('\\');
            value.push_back(e);
          }
      }
    }
    push(TokenType::kString, pos, i + 1, std::move(value));
    return i + 1;
  }

  std::string_view src_;
  LexerOptions options_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<Token> tokenize(std::string_view source, const LexerOptions& options) {
  return Lexer(source, options).run();
}

}  // namespace tidal::jinja
