// Lossy UTF-8 repair must match Rust's from_utf8_lossy byte for byte, including held-back tails.
#include <gtest/gtest.h>

#include <string>

#include "model/tokenizer/utf8.h"

namespace tidal::tok {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(LossyUtf8, ValidTextIsUnchanged) {
  EXPECT_EQ(lossy_utf8("plain ascii"), "plain ascii");
  EXPECT_EQ(lossy_utf8("caf\xC3\xA9 \xE4\xBD\xA0\xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE4\xBD\xA0\xF0\x9F\x98\x80");
  EXPECT_EQ(lossy_utf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

// Expected values follow the Unicode "maximal subpart" practice that Rust implements.
TEST(LossyUtf8, EachMaximalSubpartBecomesOneReplacement) {
  EXPECT_EQ(lossy_utf8("\x80"), kFffd);
  EXPECT_EQ(lossy_utf8("\xC0\xAF"), kFffd + kFffd);  // C0 never starts a character
  EXPECT_EQ(lossy_utf8("\xE4\xBD"), kFffd);          // truncated at the end: one replacement
  EXPECT_EQ(lossy_utf8("\xE4\xBD"
                       "A"),
            kFffd + "A");
  EXPECT_EQ(lossy_utf8("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(lossy_utf8("\xF0\x9F\x98\xF0\x9F\x98\x80"), kFffd + "\xF0\x9F\x98\x80");
  EXPECT_EQ(lossy_utf8("\xE0\x80\x80"), kFffd + kFffd + kFffd);  // overlong: E0 needs A0..BF
  EXPECT_EQ(lossy_utf8("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // surrogate
  EXPECT_EQ(lossy_utf8("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
  EXPECT_EQ(lossy_utf8("\xF5\xFF"), kFffd + kFffd);
  EXPECT_EQ(lossy_utf8("a\xC3"), "a" + kFffd);
}

TEST(LossyUtf8, HoldsOnlyAnUnfinishedTail) {
  std::string out;
  EXPECT_EQ(append_lossy_utf8("ab\xE4\xBD", true, out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(append_lossy_utf8("ab\xE4"
                              "c",
                              true, out),
            4u);  // not a prefix any more: final
  EXPECT_EQ(out, "ab" + kFffd + "c");
  out.clear();
  EXPECT_EQ(append_lossy_utf8("\x80\xF0\x9F", true, out), 1u);
  EXPECT_EQ(out, kFffd);
}

TEST(Utf8, CodePointsRoundTrip) {
  for (const char32_t c : {U'\0', U'a', U'\u00e9', U'\u4e2d', U'\U0001F600', U'\U0010FFFF'}) {
    std::string encoded;
    append_utf8(encoded, c);
    size_t pos = 0;
    EXPECT_EQ(next_code_point(encoded, pos), c);
    EXPECT_EQ(pos, encoded.size());
    EXPECT_TRUE(is_valid_utf8(encoded));
  }
  EXPECT_FALSE(is_valid_utf8("\xE4\xBD"));
}

TEST(Utf8, CharacterClasses) {
  EXPECT_TRUE(is_white_space(U' '));
  EXPECT_TRUE(is_white_space(U'\u0085'));
  EXPECT_TRUE(is_white_space(U'\u3000'));
  EXPECT_FALSE(is_white_space(U'\u180e'));
  EXPECT_FALSE(is_white_space(U'\u200b'));
  EXPECT_TRUE(is_regex_word_char(U'_'));
  EXPECT_TRUE(is_regex_word_char(U'\u0330'));  // combining marks count as word characters
  EXPECT_FALSE(is_regex_word_char(U'-'));
  EXPECT_TRUE(is_numeric(U'\u00bd'));
  EXPECT_TRUE(is_numeric(U'\u0663'));
  EXPECT_FALSE(is_numeric(U'x'));
}

}  // namespace
}  // namespace tidal::tok
