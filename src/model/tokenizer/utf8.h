// UTF-8 stepping, Rust-compatible lossy repair, and the Unicode character classes the tokenizer
// pipeline needs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tidal::tok {

// Decodes the code point at `pos` of valid UTF-8 and advances `pos` past it.
char32_t next_code_point(std::string_view text, size_t& pos);
// Byte length of the (valid) UTF-8 character that starts with `lead`.
size_t utf8_length(unsigned char lead);
void append_utf8(std::string& out, char32_t code_point);

bool is_valid_utf8(std::string_view bytes);

// Appends `bytes` to `out`, replacing every maximal ill-formed subsequence with one U+FFFD, exactly
// as Rust's String::from_utf8_lossy (which Hugging Face decoders use). With `hold_incomplete_tail`
// a trailing sequence that is a valid but unfinished prefix is left alone, so that a later call can
// finish it. Returns how many bytes of `bytes` were consumed.
size_t append_lossy_utf8(std::string_view bytes, bool hold_incomplete_tail, std::string& out);
std::string lossy_utf8(std::string_view bytes);

// Unicode White_Space: what Oniguruma's \s and Rust's char::is_whitespace accept.
bool is_white_space(char32_t c);
// What the Rust regex crate's \w accepts (Alphabetic, marks, decimal digits, connectors, joiners);
// Alphabetic is approximated by letters, letter numbers and the letter-like symbols.
bool is_regex_word_char(char32_t c);
// Rust's char::is_numeric: general categories Nd, Nl and No.
bool is_numeric(char32_t c);

}  // namespace tidal::tok
