// UTF-8 stepping and the Python str character classes (whitespace, case) that templates rely on.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tidal::jinja {

// Decodes the code point at `pos` and advances past it. Invalid bytes decode as themselves, one
// byte at a time, so that arbitrary bytes survive slicing and reversing unchanged.
char32_t next_code_point(std::string_view text, size_t& pos);
void append_utf8(std::string& out, char32_t code_point);

// Byte offsets of every code point start, plus text.size() at the end.
std::vector<size_t> code_point_offsets(std::string_view text);
size_t code_point_count(std::string_view text);

// Python's str.isspace (which is also what `\s` matches in its regular expressions).
bool is_space(char32_t c);
// Python's line boundaries for str.splitlines.
bool is_line_break(char32_t c);

char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
char32_t to_title(char32_t c);
bool is_cased_letter(char32_t c);  // has an upper or lower case form
bool is_upper(char32_t c);
bool is_lower(char32_t c);
bool is_alpha(char32_t c);
bool is_digit(char32_t c);

std::string upper(std::string_view text);
std::string lower(std::string_view text);

// Python's str.strip family; `chars` == nullptr strips whitespace.
std::string_view strip(std::string_view text, const std::string* chars, bool left, bool right);

}  // namespace tidal::jinja
