// The GPT-2 bytes_to_unicode table and the conversions built on it.
#include "model/tokenizer/byte_level.h"

#include <array>

#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

// Printable Latin-1 bytes stand for themselves; the others are moved, in byte order, to U+0100 and
// up, so that every byte has a visible, non-space character.
constexpr bool stands_for_itself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

struct Tables {
  std::array<char32_t, 256> byte_char{};
  std::array<int16_t, 512> char_byte{};  // every byte character is below U+0200
  std::array<std::array<char, 2>, 256> utf8{};
  std::array<uint8_t, 256> utf8_length{};
};

Tables make_tables() {
  Tables tables;
  tables.char_byte.fill(-1);
  char32_t next_moved = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    const char32_t c = stands_for_itself(byte) ? static_cast<char32_t>(byte) : next_moved++;
    tables.byte_char[byte] = c;
    tables.char_byte[c] = static_cast<int16_t>(byte);
    std::string encoded;
    append_utf8(encoded, c);
    tables.utf8_length[byte] = static_cast<uint8_t>(encoded.size());
    for (size_t k = 0; k < encoded.size(); ++k) tables.utf8[byte][k] = encoded[k];
  }
  return tables;
}

const Tables& tables() {
  static const Tables kTables = make_tables();
  return kTables;
}

}  // namespace

char32_t byte_to_char(uint8_t byte) {
  return tables().byte_char[byte];
}

int char_to_byte(char32_t c) {
  return c < 512 ? tables().char_byte[c] : -1;
}

void append_byte_level(std::string_view text, std::string& out) {
  const Tables& t = tables();
  for (const char ch : text) {
    const auto byte = static_cast<uint8_t>(ch);
    out.append(t.utf8[byte].data(), t.utf8_length[byte]);
  }
}

void append_byte_level_decoded(std::string_view token, std::string& out) {
  const size_t rollback = out.size();
  size_t pos = 0;
  while (pos < token.size()) {
    const int byte = char_to_byte(next_code_point(token, pos));
    if (byte < 0) {
      out.resize(rollback);
      out.append(token);
      return;
    }
    out.push_back(static_cast<char>(byte));
  }
}

}  // namespace tidal::tok
