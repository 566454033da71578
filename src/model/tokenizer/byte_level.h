// GPT-2's reversible table between the 256 byte values and printable characters, used by the
// ByteLevel pre-tokenizer (bytes -> characters) and the ByteLevel decoder (characters -> bytes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tidal::tok {

// The character that stands for `byte`.
char32_t byte_to_char(uint8_t byte);
// The byte that `c` stands for, or -1 when `c` is not one of the 256 byte characters.
int char_to_byte(char32_t c);

// Appends `text` with each of its bytes replaced by that byte's character (UTF-8 encoded).
void append_byte_level(std::string_view text, std::string& out);

// Appends what Hugging Face's ByteLevel decoder makes of one token: the bytes its characters stand
// for, or the token's own UTF-8 when any character is not a byte character (an added token such as
// "<|im_end|> x" with a plain space).
void append_byte_level_decoded(std::string_view token, std::string& out);

}  // namespace tidal::tok
