// Small hand-written tokenizer.json files exercising one rule each: merge priority, added-token
// stripping, unknown tokens, normalizers, split behaviours and Oniguruma-compatible regexes.
// Expected values were checked against Hugging Face tokenizers 0.23.3 on the same JSON.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/error.h"
#include "model/tokenizer/pcre_regex.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/split.h"
#include "model/tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace tidal {
namespace {

using Ids = std::vector<int32_t>;

// Byte-level BPE over a handful of letters. "bc" outranks "ab", so "abc" merges as a + bc.
constexpr const char* kTinyJson = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 20, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
     "normalized": false, "special": true},
    {"id": 21, "content": "[L]", "single_word": false, "lstrip": true, "rstrip": false,
     "normalized": false, "special": false},
    {"id": 22, "content": "[R]", "single_word": false, "lstrip": false, "rstrip": true,
     "normalized": false, "special": false},
    {"id": 14, "content": "mask", "single_word": true, "lstrip": false, "rstrip": false,
     "normalized": true, "special": false}
  ],
  "normalizer": {"type": "Lowercase"},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel"},
  "model": {
    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {"a": 0, "b": 1, "c": 2, "k": 3, "m": 4, "s": 5, "x": 6, "Ġ": 7, "bc": 8, "ab": 9,
              "abc": 10, "Ġa": 11, "ma": 12, "sk": 13, "mask": 14, "aa": 15, "aaaa": 16,
              "Ġabc": 17, "ä½": 18, "ł": 19},
    "merges": ["b c", "a b", "a bc", "Ġ a", "m a", "s k", "ma sk", "a a", "aa aa"]
  }
})";

Tokenizer tiny() {
  return Tokenizer::from_json(kTinyJson, "tiny");
}

TEST(HandWritten, MergesFollowRankThenLeftmost) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.encode("abc"), (Ids{10}));  // b+c (rank 0) before a+b (rank 1), then a+bc
  EXPECT_EQ(t.encode("ab"), (Ids{9}));
  EXPECT_EQ(t.encode("cab"), (Ids{2, 9}));
  EXPECT_EQ(t.encode("aaa"), (Ids{15, 0}));  // equal ranks: the leftmost pair merges first
  EXPECT_EQ(t.encode("aaaa"), (Ids{16}));
  EXPECT_EQ(t.encode("ab abc"), (Ids{9, 7, 10}));  // "Ġabc" is in the vocab but no merge makes it
  EXPECT_EQ(t.encode("ABC"), (Ids{10}));           // Lowercase normalizer
  EXPECT_EQ(t.encode("q"), (Ids{}));               // not in the vocab and no unk: dropped
}

TEST(HandWritten, AddedTokensStripAndMatchWholeWords) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.encode("x  [L]b"), (Ids{6, 21, 1}));  // lstrip swallows the spaces before
  EXPECT_EQ(t.encode("[R]  b"), (Ids{22, 1}));      // rstrip swallows the spaces after
  EXPECT_EQ(t.encode("x\t[L] [R]\tx"), (Ids{6, 21, 7, 22, 6}));
  EXPECT_EQ(t.encode(" [L]"), (Ids{21}));
  EXPECT_EQ(t.encode("[L][L]"), (Ids{21, 21}));
  EXPECT_EQ(t.encode("MASK"), (Ids{14}));  // normalized=true: matched after lowercasing
  EXPECT_EQ(t.encode("x mask x"), (Ids{6, 7, 14, 7, 6}));
  EXPECT_EQ(t.encode("amask"), (Ids{0, 14}));       // single_word: inside a word it is BPE's "mask"
  EXPECT_EQ(t.encode("a mask_"), (Ids{0, 7, 14}));  // '_' is a word character
  EXPECT_EQ(t.encode("<s>ab"), (Ids{20, 9}));
  EXPECT_EQ(t.encode("ABC<s>"), (Ids{10, 20}));
}

TEST(HandWritten, DecodeAddedAndSpecialTokens) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.decode(Ids{6, 21, 1}, false), "x[L]b");
  EXPECT_EQ(t.decode(Ids{20, 9}, false), "<s>ab");
  EXPECT_EQ(t.decode(Ids{20, 9}, true), "ab");
  EXPECT_EQ(t.decode(Ids{9, 999, -1, 10}, false), "ababc");  // unknown ids are dropped
  EXPECT_EQ(t.vocab_size(), 23);
  EXPECT_EQ(t.token_to_id("<s>"), 20);
  EXPECT_EQ(t.token_to_id("Ġabc"), 17);
  EXPECT_EQ(t.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(t.id_to_token(7), "Ġ");
  EXPECT_EQ(t.id_to_token(22), "[R]");
  EXPECT_EQ(t.id_to_token(999), "");
  EXPECT_TRUE(t.is_special(20));
  EXPECT_FALSE(t.is_special(21));
  EXPECT_FALSE(t.is_special(9));
}

TEST(HandWritten, DecodeRepairsSplitCharacters) {
  const Tokenizer t = tiny();
  EXPECT_EQ(t.decode(Ids{18}, false), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(Ids{18, 19}, false), "你");
  EXPECT_EQ(t.decode(Ids{19, 18}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(Ids{0, 18, 20, 19}, false), "a\xEF\xBF\xBD<s>\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(Ids{0, 18, 20, 19}, true), "a你");  // skipping joins the bytes again
}

TEST(HandWritten, AddedTokensGoThroughTheByteLevelDecoder) {
  nlohmann::json json = nlohmann::json::parse(kTinyJson);
  json["added_tokens"].push_back({{"id", 23}, {"content", "é"}, {"normalized", false}});
  json["added_tokens"].push_back({{"id", 24}, {"content", "Ġx"}, {"normalized", false}});
  const Tokenizer t = Tokenizer::from_json(json.dump(), "tiny-decoder");
  const Ids ids = t.encode("aé Ġx");
  EXPECT_EQ(ids, (Ids{0, 23, 7, 24}));
  // "é" is the byte character for 0xE9, a lone lead byte; "Ġx" is " x".
  EXPECT_EQ(t.decode(ids, false), "a\xEF\xBF\xBD  x");
}

TEST(HandWritten, PostProcessorsAddTheirTokensOnlyWhenAsked) {
  const auto with_processor = [](const nlohmann::json& processor) {
    nlohmann::json json = nlohmann::json::parse(kTinyJson);
    json["post_processor"] = processor;
    return Tokenizer::from_json(json.dump(), "tiny-post");
  };
  EXPECT_EQ(tiny().encode("abc", true), (Ids{10}));  // null: nothing
  const Tokenizer bert =
      with_processor({{"type", "BertProcessing"}, {"sep", {"[R]", 22}}, {"cls", {"<s>", 20}}});
  EXPECT_EQ(bert.encode("abc", true), (Ids{20, 10, 22}));
  EXPECT_EQ(bert.encode("abc", false), (Ids{10}));
  EXPECT_EQ(bert.encode("abc"), (Ids{10}));
  const Tokenizer roberta = with_processor({{"type", "RobertaProcessing"},
                                            {"sep", {"[R]", 22}},
                                            {"cls", {"<s>", 20}},
                                            {"trim_offsets", true},
                                            {"add_prefix_space", false}});
  EXPECT_EQ(roberta.encode("abc", true), (Ids{20, 10, 22}));
  // A Sequence wraps: the later processor's tokens go outside the earlier one's.
  const nlohmann::json template_bos = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {20}}, {"tokens", {"<s>"}}}}}}};
  const Tokenizer nested =
      with_processor({{"type", "Sequence"},
                      {"processors",
                       {{{"type", "ByteLevel"}},
                        {{"type", "BertProcessing"}, {"sep", {"[R]", 22}}, {"cls", {"[L]", 21}}},
                        template_bos}}});
  EXPECT_EQ(nested.encode("abc", true), (Ids{20, 21, 10, 22}));
  // A type tidal cannot apply loads, and says so only when its tokens are asked for.
  const Tokenizer other = with_processor({{"type", "SomethingNew"}});
  EXPECT_EQ(other.encode("abc"), (Ids{10}));
  EXPECT_THROW(
      {
        try {
          (void)other.encode("abc", true);
        } catch (const Error& error) {
          EXPECT_NE(std::string(error.what()).find("post_processor type 'SomethingNew'"),
                    std::string::npos)
              << error.what();
          throw;
        }
      },
      Error);
}

TEST(HandWritten, IncrementalDetokenizerHoldsPartialCharacters) {
  const Tokenizer t = tiny();
  IncrementalDetokenizer stream(t, true);
  EXPECT_EQ(stream.push(0), "a");
  EXPECT_EQ(stream.push(18), "");  // first two bytes of 你
  EXPECT_EQ(stream.push(20), "");  // <s> is skipped
  EXPECT_EQ(stream.push(19), "你");
  EXPECT_EQ(stream.push(18), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");

  IncrementalDetokenizer keep(t, false);
  EXPECT_EQ(keep.push(18), "");
  EXPECT_EQ(keep.push(20), "\xEF\xBF\xBD<s>");  // '<' ends the unfinished character
  EXPECT_EQ(keep.flush(), "");
}

TEST(HandWritten, AddedTokenIdsAreAssignedAsHuggingFaceDoes) {
  // The file's ids are only hints: Hugging Face re-adds tokens after the model's vocabulary.
  nlohmann::json json = nlohmann::json::parse(kTinyJson);
  json["added_tokens"][0]["id"] = 100;
  json["added_tokens"][1]["id"] = 7;
  const Tokenizer t = Tokenizer::from_json(json.dump(), "tiny-ids");
  EXPECT_EQ(t.token_to_id("<s>"), 20);
  EXPECT_EQ(t.token_to_id("[L]"), 21);
  EXPECT_EQ(t.encode("<s>[L]"), (Ids{20, 21}));
}

TEST(HandWritten, NormalizedSpecialTokensDecodeAsHuggingFaceDoes) {
  nlohmann::json json = nlohmann::json::parse(kTinyJson);
  json["added_tokens"] = nlohmann::json::parse(R"([
    {"id": 20, "content": "<S>", "normalized": true, "special": true},
    {"id": 21, "content": "MAX", "normalized": true, "special": false},
    {"id": 22, "content": "Ab", "normalized": false, "special": true}])");
  const Tokenizer t = Tokenizer::from_json(json.dump(), "tiny-normalized");
  const Ids ids = t.encode("<s> max Ab <S>");
  EXPECT_EQ(ids, (Ids{20, 7, 21, 7, 22, 7, 20}));
  EXPECT_EQ(t.id_to_token(20), "<s>");  // Hugging Face keeps the normalised text
  EXPECT_EQ(t.token_to_id("MAX"), 21);
  EXPECT_EQ(t.token_to_id("max"), std::nullopt);
  EXPECT_EQ(t.decode(ids, false), "<s> max Ab <s>");
  // Skipping compares token strings with the special contents, so "<s>" survives.
  EXPECT_EQ(t.decode(ids, true), "<s> max  <s>");
}

// Whitespace-split BPE with an unknown token and no decoder (tokens joined by spaces).
std::string unk_json(bool fuse_unk, bool ignore_merges) {
  nlohmann::json json = nlohmann::json::parse(R"({
    "added_tokens": [], "normalizer": null, "decoder": null,
    "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed"},
    "model": {"type": "BPE", "unk_token": "<unk>",
              "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "abab": 4}, "merges": [["a", "b"]]}
  })");
  json["model"]["fuse_unk"] = fuse_unk;
  json["model"]["ignore_merges"] = ignore_merges;
  return json.dump();
}

TEST(HandWritten, UnknownTokensAndIgnoreMerges) {
  const std::string text = "abab xyab zz";
  const Tokenizer plain = Tokenizer::from_json(unk_json(false, false), "unk");
  EXPECT_EQ(plain.encode(text), (Ids{3, 3, 0, 0, 3, 0, 0}));
  EXPECT_EQ(plain.decode(plain.encode(text), false), "ab ab <unk> <unk> ab <unk> <unk>");
  EXPECT_EQ(Tokenizer::from_json(unk_json(false, true), "unk").encode(text),
            (Ids{4, 0, 0, 3, 0, 0}));
  EXPECT_EQ(Tokenizer::from_json(unk_json(true, false), "unk").encode(text), (Ids{3, 3, 0, 3, 0}));
  const Tokenizer fused = Tokenizer::from_json(unk_json(true, true), "unk");
  EXPECT_EQ(fused.encode(text), (Ids{4, 0, 3, 0}));

  IncrementalDetokenizer stream(fused, false);
  std::string streamed;
  for (const int32_t id : fused.encode(text)) streamed += stream.push(id);
  streamed += stream.flush();
  EXPECT_EQ(streamed, "abab <unk> ab <unk>");
}

TEST(HandWritten, NfkcLowercaseAndNormalizedAddedTokens) {
  const Tokenizer t = Tokenizer::from_json(R"({
    "added_tokens": [{"id": 5, "content": "ﬁx", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": true, "special": false}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
    "pre_tokenizer": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "i": 1, "f": 2, "x": 3, "̇": 4}, "merges": []}
  })",
                                           "nfkc");
  EXPECT_EQ(t.encode("ﬁxA"), (Ids{5, 0}));
  EXPECT_EQ(t.encode("FIX"), (Ids{5}));
  EXPECT_EQ(t.encode("İa"), (Ids{1, 4, 0}));  // İ lowercases to i + U+0307
  EXPECT_EQ(t.encode("ﬁ"), (Ids{2, 1}));
  EXPECT_EQ(t.decode(Ids{5, 0}, false), "fix a");
}

std::vector<std::string> split_pieces(const std::string& text, tok::SplitBehavior behavior,
                                      bool invert) {
  std::vector<tok::Span> matches;
  tok::Regex::literal("-", "test").find_all(text, matches);
  std::vector<tok::Span> spans;
  tok::split_by_matches(text.size(), matches, behavior, invert, spans);
  std::vector<std::string> pieces;
  for (const tok::Span& span : spans) {
    if (span.end > span.begin) pieces.push_back(text.substr(span.begin, span.end - span.begin));
  }
  return pieces;
}

using Pieces = std::vector<std::string>;

TEST(HandWritten, SplitBehaviours) {
  using B = tok::SplitBehavior;
  const std::string text = "a-b--c";
  EXPECT_EQ(split_pieces(text, B::kRemoved, false), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(split_pieces(text, B::kRemoved, true), (Pieces{"-", "-", "-"}));
  EXPECT_EQ(split_pieces(text, B::kIsolated, false), (Pieces{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(split_pieces(text, B::kIsolated, true), (Pieces{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(split_pieces(text, B::kMergedWithPrevious, false), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(split_pieces(text, B::kMergedWithPrevious, true), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(split_pieces(text, B::kMergedWithNext, false), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(split_pieces(text, B::kMergedWithNext, true), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(split_pieces(text, B::kContiguous, false), (Pieces{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(split_pieces(text, B::kContiguous, true), (Pieces{"a", "-", "b", "--", "c"}));
}

class Collect : public tok::WordSink {
 public:
  void word(std::string_view word) override { words.emplace_back(word); }
  Pieces words;
};

Pieces pre_tokenize(const std::string& config, const std::string& text) {
  const auto pre = tok::PreTokenizer::from_json(nlohmann::json::parse(config), "test");
  Collect collect;
  pre.split(text, collect);
  return collect.words;
}

TEST(HandWritten, PreTokenizerSteps) {
  EXPECT_EQ(pre_tokenize(R"({"type": "Digits", "individual_digits": true})", "ab123c4"),
            (Pieces{"ab", "1", "2", "3", "c", "4"}));
  EXPECT_EQ(pre_tokenize(R"({"type": "Digits", "individual_digits": false})", "ab123c4"),
            (Pieces{"ab", "123", "c", "4"}));
  // Empty matches cut too, except right where the previous match ended (onig's find_iter).
  EXPECT_EQ(pre_tokenize(R"({"type": "Split", "pattern": {"Regex": "\\s*"},
                             "behavior": "Isolated"})",
                         "ab  c"),
            (Pieces{"a", "b", "  ", "c"}));
  EXPECT_EQ(pre_tokenize(R"({"type": "Split", "pattern": {"Regex": "\\s*"},
                             "behavior": "MergedWithPrevious"})",
                         "ab  c"),
            (Pieces{"a", "b  ", "c"}));
  EXPECT_EQ(pre_tokenize(R"({"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated"})",
                         "abc"),
            (Pieces{"a", "b", "c"}));
  EXPECT_EQ(pre_tokenize(R"({"type": "ByteLevel", "add_prefix_space": true})", "hi  there"),
            (Pieces{"Ġhi", "Ġ", "Ġthere"}));
  EXPECT_EQ(pre_tokenize(R"({"type": "Sequence", "pretokenizers": [
                             {"type": "Split", "pattern": {"String": "|"}, "behavior": "Removed"},
                             {"type": "ByteLevel", "add_prefix_space": true, "use_regex": false}]})",
                         "a b| c"),
            (Pieces{"ĠaĠb", "Ġc"}));
}

std::vector<std::string> regex_matches(const std::string& pattern, const std::string& text) {
  std::vector<tok::Span> spans;
  tok::Regex::from_oniguruma(pattern, "test").find_all(text, spans);
  std::vector<std::string> out;
  for (const tok::Span& span : spans) out.push_back(text.substr(span.begin, span.end - span.begin));
  return out;
}

TEST(HandWritten, OnigurumaCompatibleRegex) {
  // \s is Unicode White_Space: NEL and NBSP are in, U+180E is not (PCRE2 alone would take it).
  EXPECT_EQ(regex_matches(R"(\s+)", "a\u0085b\u00a0c\u180ed"), (Pieces{"\u0085", "\u00a0"}));
  EXPECT_EQ(regex_matches(R"(\S+)", "a\u180eb c"), (Pieces{"a\u180eb", "c"}));
  EXPECT_EQ(regex_matches(R"([^\s\p{L}]+)", "ab12 \u0085!?"), (Pieces{"12", "!?"}));
  EXPECT_EQ(regex_matches(R"((?i:'s|'ll))", "IT'S THEY'LL it's"), (Pieces{"'S", "'LL", "'s"}));
  EXPECT_EQ(regex_matches(R"(\s+(?!\S)|\s+)", "a   b"), (Pieces{"  ", " "}));
  EXPECT_EQ(regex_matches(R"(\u00e9+)", "caf\u00e9\u00e9"), (Pieces{"\u00e9\u00e9"}));
  EXPECT_EQ(regex_matches(R"(\w+)", "e\u0301t\u00e9_1 x"), (Pieces{"e\u0301t\u00e9_1", "x"}));
  EXPECT_EQ(regex_matches(R"(\w+)", "a½b Ⅻc ٣d ‿e"), (Pieces{"a½b", "Ⅻc", "٣d", "‿e"}));
  EXPECT_EQ(regex_matches(R"(\h+)", "xyz 0aF g"), (Pieces{"0aF"}));              // Ruby: \h is hex
  EXPECT_EQ(regex_matches(R"((?m:a.b))", "a\nb axb"), (Pieces{"a\nb", "axb"}));  // Ruby: dotall
  EXPECT_EQ(regex_matches(R"(^\w)", "ab\ncd"), (Pieces{"a", "c"}));  // Ruby: ^ is per line
  EXPECT_EQ(tok::translate_oniguruma(R"([\s\d]\h)"),
            "[\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}"
            "\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\d][0-9a-fA-F]");
}

}  // namespace
}  // namespace tidal
