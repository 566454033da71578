// PCRE2-backed Regex: Oniguruma-to-PCRE2 translation, JIT compilation and match iteration.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer/pcre_regex.h"

#include <pcre2.h>

#include <array>

#include "common/error.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

// Oniguruma's \s is the White_Space property; PCRE2's also takes U+180E, so spell it out.
constexpr std::string_view kSpaceClassBody =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
// Oniguruma's Unicode \w is Letter | Mark | Number | Connector_Punctuation; PCRE2's lacks marks.
constexpr std::string_view kWordClassBody = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kHexClassBody = "0-9a-fA-F";  // Ruby's \h

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buffer{};
  pcre2_get_error_message(code, buffer.data(), buffer.size());
  return std::string(reinterpret_cast<const char*>(buffer.data()));
}

}  // namespace

std::string translate_oniguruma(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  const size_t n = pattern.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < n) {
      const char escaped = pattern[i + 1];
      std::string_view body;
      bool negated = false;
      switch (escaped) {
        case 's':
        case 'S':
          body = kSpaceClassBody;
          negated = escaped == 'S';
          break;
        case 'w':
        case 'W':
          body = kWordClassBody;
          negated = escaped == 'W';
          break;
        case 'h':
        case 'H':
          body = kHexClassBody;
          negated = escaped == 'H';
          break;
        case 'u':
          if (i + 5 < n && is_hex(pattern[i + 2]) && is_hex(pattern[i + 3]) &&
              is_hex(pattern[i + 4]) && is_hex(pattern[i + 5])) {
            out += "\\x{";
            out += pattern.substr(i + 2, 4);
            out += '}';
            i += 5;
            continue;
          }
          break;
        default:
          break;
      }
      if (!body.empty() && !(in_class && negated)) {
        // A negated class cannot be spliced into an enclosing class; that case keeps PCRE2's own
        // meaning, which differs only in rare characters.
        if (in_class) {
          out += body;
        } else {
          out += negated ? "[^" : "[";
          out += body;
          out += ']';
        }
      } else {
        out += c;
        out += escaped;
      }
      ++i;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < n && pattern[i + 1] == ':') {
        const size_t close = pattern.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out += pattern.substr(i, close + 2 - i);
          i = close + 1;
          continue;
        }
      }
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      // A ']' right after the opening (or after '^') is a literal member, not the end.
      if (i + 1 < n && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < n && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == '(' && i + 2 < n && pattern[i + 1] == '?') {
      // Ruby's (?m) is PCRE2's (?s): dot matches newline.
      size_t j = i + 2;
      while (j < n &&
             (pattern[j] == 'i' || pattern[j] == 'm' || pattern[j] == 'x' || pattern[j] == '-')) {
        ++j;
      }
      if (j > i + 2 && j < n && (pattern[j] == ':' || pattern[j] == ')')) {
        out += "(?";
        for (size_t k = i + 2; k < j; ++k) out += pattern[k] == 'm' ? 's' : pattern[k];
        i = j - 1;
        continue;
      }
    }
    out += c;
  }
  return out;
}

void Regex::CodeDeleter::operator()(pcre2_real_code_8* code) const {
  pcre2_code_free(code);
}

Regex Regex::compile(const std::string& pattern, uint32_t options, const std::string& source,
                     std::string_view shown_pattern) {
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  TIDAL_CHECK(context != nullptr, "out of memory creating a PCRE2 context");
  // Oniguruma only knows \n as a newline; PCRE2's build default could differ.
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2 rejects UCP with LITERAL, where it would mean nothing anyway.
  const uint32_t unicode = (options & PCRE2_LITERAL) != 0 ? PCRE2_UTF : PCRE2_UTF | PCRE2_UCP;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options | unicode, &error_code, &error_offset, context);
  pcre2_compile_context_free(context);
  if (code == nullptr) {
    TIDAL_FAIL("tokenizer ", source, ": cannot compile regex '", shown_pattern, "' (as PCRE2 '",
               pattern, "'): ", pcre2_message(error_code), " at offset ", error_offset);
  }
  // Without JIT the interpreter still works, only slower.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  Regex regex;
  regex.code_ = std::shared_ptr<pcre2_real_code_8>(code, CodeDeleter{});
  return regex;
}

Regex Regex::from_oniguruma(std::string_view pattern, const std::string& source) {
  // Oniguruma's Ruby syntax makes ^ and $ line anchors.
  return compile(translate_oniguruma(pattern), PCRE2_MULTILINE, source, pattern);
}

Regex Regex::literal(std::string_view text, const std::string& source) {
  return compile(std::string(text), PCRE2_LITERAL, source, text);
}

void Regex::find_all(std::string_view text, std::vector<Span>& matches) const {
  pcre2_code* code = code_.get();
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  TIDAL_CHECK(data != nullptr, "out of memory creating PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  size_t last_match_end = std::string_view::npos;
  while (search_from <= text.size()) {
    // The caller guarantees valid UTF-8; checking it on every call would be quadratic.
    int rc = pcre2_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, data.get(),
                         nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       data.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    TIDAL_CHECK(rc >= 0, "PCRE2 match failed: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin == end && end == last_match_end) {
      search_from += search_from < text.size()
                         ? utf8_length(static_cast<unsigned char>(text[search_from]))
                         : 1;
      continue;
    }
    matches.push_back({begin, end});
    search_from = end;
    last_match_end = end;
  }
}

}  // namespace tidal::tok
