// Fidelity against Hugging Face tokenizers: every corpus entry must encode to exactly the ids in
// <name>.expected.jsonl and decode to the recorded strings; random id sequences must decode the
// same; the incremental detokenizer must reproduce decode() without ever emitting broken UTF-8.
// Expectations come from tools/make_tokenizer_expectations.py.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace tidal {
namespace {

struct FidelityCase {
  std::string name;
  std::string tokenizer_path;  // empty when the fixture could not be prepared
};

std::string printable(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', true);
}

std::string ids_text(const std::vector<int32_t>& ids) {
  return nlohmann::json(ids).dump();
}

// Decodes `ids` through the incremental detokenizer, checking every piece it returns.
std::string stream_decode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip,
                          const std::string& context) {
  IncrementalDetokenizer stream(tokenizer, skip);
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = stream.push(ids[i]);
    EXPECT_TRUE(testing::valid_utf8(piece)) << context << ": push #" << i << " (id " << ids[i]
                                            << ") returned invalid UTF-8 " << printable(piece);
    text += piece;
  }
  const std::string tail = stream.flush();
  EXPECT_TRUE(testing::valid_utf8(tail)) << context << ": flush returned invalid UTF-8";
  return text + tail;
}

class Fidelity : public ::testing::TestWithParam<FidelityCase> {
 protected:
  void SetUp() override {
    if (GetParam().tokenizer_path.empty() || !std::filesystem::exists(GetParam().tokenizer_path)) {
      GTEST_SKIP() << GetParam().name << " tokenizer not available at '"
                   << GetParam().tokenizer_path << "'";
    }
    const auto start = std::chrono::steady_clock::now();
    tokenizer_.emplace(Tokenizer::from_file(GetParam().tokenizer_path));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "[ info     ] " << GetParam().name << ": loaded in " << seconds * 1000.0
              << " ms, vocab_size " << tokenizer_->vocab_size() << "\n";
  }

  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  std::optional<Tokenizer> tokenizer_;
};

TEST_P(Fidelity, CorpusMatchesHuggingFace) {
  const auto corpus = testing::read_jsonl(testing::tokenizer_fixture("corpus.jsonl"));
  const auto expected =
      testing::read_jsonl(testing::tokenizer_fixture(GetParam().name + ".expected.jsonl"));
  ASSERT_EQ(corpus.size(), expected.size())
      << "stale expectations: rerun tools/make_tokenizer_expectations.py";
  ASSERT_GE(corpus.size(), 150u);

  size_t passed = 0;
  for (size_t index = 0; index < corpus.size(); ++index) {
    const std::string text = corpus[index].get<std::string>();
    const auto want = expected[index]["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tokenizer().encode(text);
    bool ok = true;
    if (got != want) {
      ok = false;
      size_t first = 0;
      while (first < got.size() && first < want.size() && got[first] == want[first]) ++first;
      ADD_FAILURE() << GetParam().name << " corpus entry " << index << " " << printable(text)
                    << "\n  first difference at position " << first << "\n  got      "
                    << ids_text(got) << "\n  expected " << ids_text(want);
    }
    for (const bool skip : {false, true}) {
      const std::string key = skip ? "decoded_skip_special" : "decoded";
      const std::string want_text = expected[index][key].get<std::string>();
      const std::string decoded = tokenizer().decode(want, skip);
      if (decoded != want_text) {
        ok = false;
        ADD_FAILURE() << GetParam().name << " corpus entry " << index << " " << printable(text)
                      << "\n  decode(skip=" << skip << ") " << printable(decoded)
                      << "\n  expected        " << printable(want_text);
      }
      const std::string context = GetParam().name + " corpus entry " + std::to_string(index);
      const std::string streamed = stream_decode(tokenizer(), want, skip, context);
      if (streamed != decoded) {
        ok = false;
        ADD_FAILURE() << context << ": streamed " << printable(streamed) << " != decoded "
                      << printable(decoded);
      }
    }
    passed += ok ? 1 : 0;
  }
  std::cout << "[ info     ] " << GetParam().name << ": " << passed << "/" << corpus.size()
            << " corpus entries match Hugging Face\n";
  EXPECT_EQ(passed, corpus.size());
}

TEST_P(Fidelity, RandomIdSequencesDecodeLikeHuggingFace) {
  const auto cases =
      testing::read_jsonl(testing::tokenizer_fixture(GetParam().name + ".decode_expected.jsonl"));
  ASSERT_FALSE(cases.empty());
  for (size_t index = 0; index < cases.size(); ++index) {
    const auto ids = cases[index]["ids"].get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      const std::string want =
          cases[index][skip ? "decoded_skip_special" : "decoded"].get<std::string>();
      const std::string context = GetParam().name + " decode case " + std::to_string(index) + " " +
                                  ids_text(ids) + " skip=" + std::to_string(skip);
      EXPECT_EQ(tokenizer().decode(ids, skip), want) << context;
      EXPECT_EQ(stream_decode(tokenizer(), ids, skip, context), want) << context;
    }
  }
}

TEST_P(Fidelity, EncodeDecodeRoundTripsCorpus) {
  // Whatever the encoder does with the text, decoding our own ids must give what HF's decode of
  // its ids gives (for Qwen3: the NFC-normalised text).
  const auto corpus = testing::read_jsonl(testing::tokenizer_fixture("corpus.jsonl"));
  const auto expected =
      testing::read_jsonl(testing::tokenizer_fixture(GetParam().name + ".expected.jsonl"));
  for (size_t index = 0; index < corpus.size() && index < expected.size(); ++index) {
    const std::string text = corpus[index].get<std::string>();
    EXPECT_EQ(tokenizer().decode(tokenizer().encode(text), false),
              expected[index]["decoded"].get<std::string>())
        << "entry " << index << " " << printable(text);
  }
}

TEST_P(Fidelity, AddSpecialTokensMatchesHuggingFace) {
  const auto corpus = testing::read_jsonl(testing::tokenizer_fixture("corpus.jsonl"));
  const auto expected =
      testing::read_jsonl(testing::tokenizer_fixture(GetParam().name + ".special_expected.jsonl"));
  ASSERT_EQ(corpus.size(), expected.size())
      << "stale expectations: rerun tools/make_tokenizer_expectations.py";
  for (size_t index = 0; index < corpus.size(); ++index) {
    const std::string text = corpus[index].get<std::string>();
    EXPECT_EQ(ids_text(tokenizer().encode(text, /*add_special_tokens=*/true)),
              ids_text(expected[index]["ids"].get<std::vector<int32_t>>()))
        << "entry " << index << " " << printable(text);
  }
}

std::vector<FidelityCase> fidelity_cases() {
  std::vector<FidelityCase> cases;
#ifdef TIDAL_QWEN3_TOKENIZER_JSON
  cases.push_back({"qwen3", TIDAL_QWEN3_TOKENIZER_JSON});
#else
  cases.push_back({"qwen3", ""});
#endif
  cases.push_back(
      {"fixture", std::string(TIDAL_SOURCE_DIR) + "/tests/fixtures/tiny-qwen3-moe/tokenizer.json"});
  // Derived from the fixture to cover added-token, split and normalizer options Qwen3 lacks.
  cases.push_back(
      {"fixture_options", testing::tokenizer_fixture("fixture_options/tokenizer.json")});
  // Derived from the fixture with a post-processor that adds a BOS and an EOS around a text.
  cases.push_back(
      {"fixture_template", testing::tokenizer_fixture("fixture_template/tokenizer.json")});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Fidelity, ::testing::ValuesIn(fidelity_cases()),
                         [](const auto& case_info) { return case_info.param.name; });

}  // namespace
}  // namespace tidal
