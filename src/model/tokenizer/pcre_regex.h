// A Hugging Face tokenizer regex (Oniguruma syntax) compiled with PCRE2 and iterated the way
// Hugging Face iterates Oniguruma matches.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;

namespace tidal::tok {

struct Span {
  size_t begin;
  size_t end;
};

class Regex {
 public:
  // Throws tidal::Error naming `source` and the pattern when PCRE2 rejects it.
  static Regex from_oniguruma(std::string_view pattern, const std::string& source);
  // Matches `text` literally (Split's {"String": ...} pattern).
  static Regex literal(std::string_view text, const std::string& source);

  // Non-overlapping matches, left to right, of valid UTF-8 `text`. An empty match is dropped when
  // it sits where the previous match ended, as the onig crate's find_iter does.
  void find_all(std::string_view text, std::vector<Span>& matches) const;

 private:
  struct CodeDeleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  static Regex compile(const std::string& pattern, uint32_t options, const std::string& source,
                       std::string_view shown_pattern);

  std::shared_ptr<pcre2_real_code_8> code_;  // shared: compiled code is immutable and thread-safe
};

// Rewrites Oniguruma (Ruby syntax) constructs whose PCRE2 meaning differs: \s, \S, \w, \W, \h, \H,
// \uHHHH and the (?m) flag. Exposed for tests.
std::string translate_oniguruma(std::string_view pattern);

}  // namespace tidal::tok
