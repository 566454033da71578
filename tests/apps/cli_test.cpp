// The tidal binary as users and outside checks call it: tokenize and generate, their JSON, and
// errors on stderr with a non-zero exit code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/fixture.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs `tidal <arguments>` with `input` on stdin.
CommandResult run_tidal(const std::string& arguments, const std::string& input = "") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(rand());
  const auto in_path = dir / ("tidal_in_" + tag);
  const auto out_path = dir / ("tidal_out_" + tag);
  const auto err_path = dir / ("tidal_err_" + tag);
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string command = std::string(TIDAL_BINARY_DIR) + "/tidal " + arguments + " <" +
                              in_path.string() + " >" + out_path.string() + " 2>" +
                              err_path.string();
  const int status = std::system(command.c_str());
  CommandResult result{.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                       .out = read_file(out_path),
                       .err = read_file(err_path)};
  std::filesystem::remove(in_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? "," : "") + std::to_string(ids[i]);
  return text;
}

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

}  // namespace
}  // namespace tidal
