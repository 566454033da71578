// The tidal binary as users and outside checks call it: tokenize and generate, their JSON, and
// errors on stderr with a non-zero exit code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/fixture.h"
#include "support/run_tidal.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;

using testing_util::CommandResult;
using testing_util::join_ids;
using testing_util::run_tidal;

TEST(Cli, TokenizeReadsStdinAndPrintsIds) {
  for (const auto& prompt : testing_util::load_reference("default")) {
    const CommandResult result =
        run_tidal("tokenize --json --tokenizer " + testing_util::fixture_model_dir(), prompt.text);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(nlohmann::json::parse(result.out).at("ids").get<std::vector<int32_t>>(),
              prompt.prompt_ids);
  }
}

TEST(Cli, GenerateJsonMatchesTransformers) {
  const auto reference = testing_util::load_reference("default");
  for (size_t p = 0; p < 2; ++p) {
    const auto& expected = reference[p];
    const CommandResult result = run_tidal(
        "generate --json --ignore-eos --logprobs 5 --max-tokens " +
        std::to_string(expected.greedy_ids.size()) + " --model " +
        testing_util::fixture_model_dir() + " --prompt-token-ids " + join_ids(expected.prompt_ids));
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const nlohmann::json output = nlohmann::json::parse(result.out);
    EXPECT_EQ(output.at("prompt_token_ids").get<std::vector<int32_t>>(), expected.prompt_ids);
    EXPECT_EQ(output.at("token_ids").get<std::vector<int32_t>>(), expected.greedy_ids);
    EXPECT_EQ(output.at("finish_reason"), "length");
    ASSERT_EQ(output.at("logprobs").size(), expected.greedy_ids.size());
    for (size_t step = 0; step < expected.greedy_ids.size(); ++step) {
      const nlohmann::json& entry = output.at("logprobs")[step];
      EXPECT_EQ(entry.at("token_id"), expected.greedy_ids[step]);
      EXPECT_NEAR(entry.at("logprob").get<float>(), expected.top_logprobs[step][0].second, 2e-3);
      ASSERT_EQ(entry.at("top").size(), 5u);
      EXPECT_EQ(entry.at("top")[0][0], expected.top_logprobs[step][0].first);
    }
  }
}

TEST(Cli, GeneratePromptTextUsesTheDefaultModel) {
  const auto reference = testing_util::load_reference("default");
  const CommandResult result =
      run_tidal("generate --json --ignore-eos --max-tokens 8 --prompt '" + reference[0].text + "'");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json output = nlohmann::json::parse(result.out);
  EXPECT_EQ(output.at("prompt_token_ids").get<std::vector<int32_t>>(), reference[0].prompt_ids);
  const std::vector<int32_t> expected(reference[0].greedy_ids.begin(),
                                      reference[0].greedy_ids.begin() + 8);
  EXPECT_EQ(output.at("token_ids").get<std::vector<int32_t>>(), expected);
  EXPECT_TRUE(output.at("logprobs").is_null());
  EXPECT_TRUE(output.at("text").is_string());
}

TEST(Cli, ErrorsGoToStderrWithNonZeroExit) {
  CommandResult result = run_tidal("generate --json --prompt hi --model /nonexistent/model");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("/nonexistent/model"));
  EXPECT_TRUE(result.out.empty());

  result = run_tidal("generate --json --prompt-token-ids 1,x,3");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("'x' is not a token id"));

  result = run_tidal("generate --json");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("--prompt"));

  result = run_tidal("generate --json --prompt hi --temperature -2");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("temperature"));

  result = run_tidal("tokenize --json --tokenizer /nonexistent/tokenizer.json");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("/nonexistent/tokenizer.json"));

  result = run_tidal("generate --json --prompt hi --device tpu");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("unknown device 'tpu'"));
}

// The bench's CPU dry run: a batch whose KV cache does not fit is skipped with the reason, the
// others and the prefill still run. The tiny model's block of 16 tokens is 16 KiB in f32.
TEST(Cli, BenchSkipsWhatDoesNotFitAndSaysWhy) {
  const std::filesystem::path json =
      std::filesystem::temp_directory_path() / ("tidal-bench-" + std::to_string(getpid()));
  const CommandResult result = run_tidal(
      "bench --device cpu --config " + testing_util::fixture_model_dir() +
      "/config.json --batch-sizes 1,8 --context 64 --prefill-tokens 128 --iterations 1 "
      "--prefill-iterations 1 --copy-mib 1 --matmul-size 64 --kv-cache-memory 256KiB --json " +
      json.string());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("skipped: decode at batch 8 needs a KV cache of 32 blocks "
                                    "(512.0 KiB), more than --kv-cache-memory 256.0 KiB"));
  std::ifstream file(json);
  const nlohmann::json report = nlohmann::json::parse(file);
  std::filesystem::remove(json);
  ASSERT_EQ(report.at("decode").size(), 1u);
  EXPECT_EQ(report.at("decode")[0].at("batch"), 1);
  EXPECT_EQ(report.at("skipped").size(), 1u);
  EXPECT_EQ(report.at("prefill").at("tokens"), 128);
}

}  // namespace
}  // namespace tidal
