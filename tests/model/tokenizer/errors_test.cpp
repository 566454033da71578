// Malformed and unsupported tokenizer.json files must fail with a tidal::Error naming the file and
// the offending part.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {
namespace {

// A minimal valid file, with one part replaced by the caller.
std::string tokenizer_json(const std::string& normalizer, const std::string& pre_tokenizer,
                           const std::string& model, const std::string& decoder) {
  return R"({"version": "1.0", "added_tokens": [], "normalizer": )" + normalizer +
         R"(, "pre_tokenizer": )" + pre_tokenizer + R"(, "model": )" + model + R"(, "decoder": )" +
         decoder + "}";
}

const std::string kModel =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
const std::string kPre = R"({"type": "ByteLevel", "add_prefix_space": false})";
const std::string kDecoder = R"({"type": "ByteLevel"})";

// Runs `load` and returns the tidal::Error message it throws ("" when nothing is thrown).
template <typename Load>
std::string error_of(Load load) {
  try {
    load();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string error_of_json(const std::string& json) {
  return error_of([&] { Tokenizer::from_json(json, "test/tokenizer.json"); });
}

TEST(TokenizerErrors, ValidMinimalFileLoads) {
  const Tokenizer tokenizer =
      Tokenizer::from_json(tokenizer_json("null", kPre, kModel, kDecoder), "minimal");
  EXPECT_EQ(tokenizer.encode("ab"), (std::vector<int32_t>{2}));
}

TEST(TokenizerErrors, MissingFile) {
  const std::string message =
      error_of([] { Tokenizer::from_file("/nonexistent/dir/tokenizer.json"); });
  EXPECT_NE(message.find("/nonexistent/dir/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("not found"), std::string::npos) << message;
}

TEST(TokenizerErrors, DirectoryWithoutTokenizerJson) {
  const auto dir = std::filesystem::temp_directory_path() / "tidal_tokenizer_empty_dir";
  std::filesystem::create_directories(dir);
  const std::string message = error_of([&] { Tokenizer::from_file(dir.string()); });
  EXPECT_NE(message.find((dir / "tokenizer.json").string()), std::string::npos) << message;
}

TEST(TokenizerErrors, InvalidJson) {
  const std::string message = error_of_json(R"({"model": {"type": "BPE", )");
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

TEST(TokenizerErrors, InvalidJsonFromFile) {
  const auto path = std::filesystem::temp_directory_path() / "tidal_tokenizer_bad.json";
  std::ofstream(path) << "not json at all";
  const std::string message = error_of([&] { Tokenizer::from_file(path.string()); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

TEST(TokenizerErrors, MissingModel) {
  const std::string message = error_of_json(R"({"version": "1.0", "normalizer": null})");
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("missing \"model\""), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedModelType) {
  const std::string message = error_of_json(tokenizer_json(
      "null", kPre, R"({"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"})", kDecoder));
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("unsupported model type 'WordPiece'"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedNormalizerType) {
  const std::string message = error_of_json(tokenizer_json(
      R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "BertNormalizer"}]})", kPre,
      kModel, kDecoder));
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("unsupported normalizer type 'BertNormalizer'"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, UnsupportedPreTokenizerType) {
  const std::string message =
      error_of_json(tokenizer_json("null", R"({"type": "Whitespace"})", kModel, kDecoder));
  EXPECT_NE(message.find("unsupported pre_tokenizer type 'Whitespace'"), std::string::npos)
      << message;
}

TEST(TokenizerErrors, UnsupportedDecoderType) {
  const std::string message = error_of_json(tokenizer_json(
      "null", kPre, kModel, R"({"type": "Sequence", "decoders": [{"type": "Metaspace"}]})"));
  EXPECT_NE(message.find("unsupported decoder type 'Metaspace'"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedSplitBehavior) {
  const std::string message = error_of_json(tokenizer_json(
      "null", R"({"type": "Split", "pattern": {"String": "-"}, "behavior": "Sideways"})", kModel,
      kDecoder));
  EXPECT_NE(message.find("unsupported Split behavior 'Sideways'"), std::string::npos) << message;
}

TEST(TokenizerErrors, BadRegex) {
  const std::string message = error_of_json(tokenizer_json(
      "null", R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})",
      kModel, kDecoder));
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("(unclosed"), std::string::npos) << message;
}

TEST(TokenizerErrors, MergeWithUnknownToken) {
  const std::string message = error_of_json(tokenizer_json(
      "null", kPre, R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})", kDecoder));
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("merge 0 refers to unknown token 'ab'"), std::string::npos) << message;
}

TEST(TokenizerErrors, MalformedMerge) {
  const std::string message = error_of_json(tokenizer_json(
      "null", kPre, R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]})", kDecoder));
  EXPECT_NE(message.find("merge 0 'a' is not two tokens"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedBpeOptions) {
  EXPECT_NE(error_of_json(
                tokenizer_json(
                    "null", kPre,
                    R"({"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": true})",
                    kDecoder))
                .find("byte_fallback"),
            std::string::npos);
  EXPECT_NE(error_of_json(tokenizer_json("null", kPre,
                                         R"({"type": "BPE", "vocab": {"a": 0}, "merges": [],
                                             "continuing_subword_prefix": "##"})",
                                         kDecoder))
                .find("continuing_subword_prefix"),
            std::string::npos);
  EXPECT_NE(error_of_json(tokenizer_json(
                              "null", kPre,
                              R"({"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1})",
                              kDecoder))
                .find("dropout"),
            std::string::npos);
}

TEST(TokenizerErrors, WrongJsonTypes) {
  const std::string message = error_of_json(tokenizer_json(
      "null", kPre, R"({"type": "BPE", "vocab": {"a": "zero"}, "merges": []})", kDecoder));
  EXPECT_NE(message.find("test/tokenizer.json"), std::string::npos) << message;
  const std::string added = error_of_json(
      R"({"added_tokens": [{"id": "x", "content": "<s>"}], "model": )" + kModel + "}");
  EXPECT_NE(added.find("test/tokenizer.json"), std::string::npos) << added;
  const std::string behavior = error_of_json(tokenizer_json(
      "null", R"({"type": "Split", "pattern": {"String": "-"}, "behavior": 3})", kModel, kDecoder));
  EXPECT_NE(behavior.find("test/tokenizer.json"), std::string::npos) << behavior;
}

}  // namespace
}  // namespace tidal
