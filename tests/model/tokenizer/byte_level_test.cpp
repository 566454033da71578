// The GPT-2 byte table: a bijection onto printable characters with the well-known fixed points.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {
namespace {

TEST(ByteLevel, EveryByteRoundTrips) {
  std::set<char32_t> seen;
  for (int byte = 0; byte < 256; ++byte) {
    const char32_t c = byte_to_char(static_cast<uint8_t>(byte));
    EXPECT_TRUE(seen.insert(c).second) << "byte " << byte << " shares a character";
    EXPECT_EQ(char_to_byte(c), byte);
  }
  EXPECT_EQ(char_to_byte(U'\u4e2d'), -1);
}

TEST(ByteLevel, KnownCharacters) {
  EXPECT_EQ(byte_to_char(' '), U'\u0120');   // Ġ
  EXPECT_EQ(byte_to_char('\n'), U'\u010a');  // Ċ
  EXPECT_EQ(byte_to_char('\t'), U'\u0109');  // ĉ
  EXPECT_EQ(byte_to_char('a'), U'a');
  EXPECT_EQ(byte_to_char(0xE9), U'\u00e9');
  EXPECT_EQ(byte_to_char(0xAD), U'\u0143');  // the last moved byte
}

TEST(ByteLevel, StringRoundTrip) {
  std::string all_bytes;
  for (int byte = 0; byte < 256; ++byte) all_bytes.push_back(static_cast<char>(byte));
  std::string mapped;
  append_byte_level(all_bytes, mapped);
  EXPECT_TRUE(is_valid_utf8(mapped));
  std::string back;
  append_byte_level_decoded(mapped, back);
  EXPECT_EQ(back, all_bytes);

  mapped.clear();
  append_byte_level("héllo wörld\n", mapped);
  EXPECT_EQ(mapped, "hÃ©llo\xC4\xA0wÃ¶rld\xC4\x8A");
}

TEST(ByteLevel, TokensWithOtherCharactersDecodeToThemselves) {
  std::string out;
  append_byte_level_decoded("<|im_end|>", out);
  EXPECT_EQ(out, "<|im_end|>");
  out.clear();
  append_byte_level_decoded("a b", out);  // a plain space is not a byte character
  EXPECT_EQ(out, "a b");
  out.clear();
  append_byte_level_decoded("\xC4\xA0x", out);  // "Ġx"
  EXPECT_EQ(out, " x");
}

}  // namespace
}  // namespace tidal::tok
