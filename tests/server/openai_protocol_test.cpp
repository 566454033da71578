// Parsing of completion and chat requests: defaults, every field's type and range checks, and
// the error body's shape.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/openai_protocol.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;

CompletionRequest parse_ok(const std::string& body, const SamplingDefaults& defaults = {}) {
  auto parsed = parse_completion_request(body, defaults);
  if (auto* error = std::get_if<ApiError>(&parsed)) {
    ADD_FAILURE() << "unexpected error: " << error->message;
    return {};
  }
  return std::get<CompletionRequest>(parsed);
}

ApiError parse_error(const std::string& body) {
  auto parsed = parse_completion_request(body, {});
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  ADD_FAILURE() << "expected an error for " << body;
  return {};
}

ApiError chat_error(const std::string& body) {
  auto parsed = parse_chat_request(body, {});
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  ADD_FAILURE() << "expected an error for " << body;
  return {};
}

TEST(OpenAiProtocol, CompletionDefaults) {
  const CompletionRequest request = parse_ok(R"({"model":"m","prompt":"hi"})");
  EXPECT_EQ(request.model, "m");
  ASSERT_EQ(request.prompts.size(), 1u);
  EXPECT_EQ(std::get<std::string>(request.prompts[0]), "hi");
  EXPECT_EQ(request.params.max_tokens, 16);
  EXPECT_FLOAT_EQ(request.params.temperature, 1.0f);
  EXPECT_EQ(request.n, 1);
  EXPECT_FALSE(request.stream);
}

TEST(OpenAiProtocol, ModelDefaultsApplyOnlyWhenTheRequestIsSilent) {
  const SamplingDefaults defaults{.temperature = 0.6f, .top_p = 0.95f, .top_k = 20};
  CompletionRequest request = parse_ok(R"({"model":"m","prompt":"hi"})", defaults);
  EXPECT_FLOAT_EQ(request.params.temperature, 0.6f);
  EXPECT_EQ(request.params.top_k, 20);
  request = parse_ok(R"({"model":"m","prompt":"hi","temperature":0,"top_k":-1})", defaults);
  EXPECT_FLOAT_EQ(request.params.temperature, 0.0f);
  EXPECT_EQ(request.params.top_k, -1);
}

TEST(OpenAiProtocol, PromptForms) {
  EXPECT_EQ(
      std::get<std::vector<int32_t>>(parse_ok(R"({"model":"m","prompt":[1,2,3]})").prompts[0]),
      (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_ok(R"({"model":"m","prompt":["a","b"]})").prompts.size(), 2u);
  EXPECT_EQ(parse_ok(R"({"model":"m","prompt":[[1],[2,3]]})").prompts.size(), 2u);
}

TEST(OpenAiProtocol, AllSamplingFields) {
  const CompletionRequest request = parse_ok(
      R"({"model":"m","prompt":"x","max_tokens":5,"temperature":0.5,"top_p":0.9,"top_k":7,
          "seed":3,"stop":["a","b"],"n":2,"logprobs":3,"stream":true,
          "stream_options":{"include_usage":true},"min_tokens":2,"ignore_eos":true,
          "return_token_ids":true})");
  EXPECT_EQ(request.params.max_tokens, 5);
  EXPECT_FLOAT_EQ(request.params.top_p, 0.9f);
  EXPECT_EQ(request.params.top_k, 7);
  EXPECT_EQ(request.params.seed, 3u);
  EXPECT_EQ(request.params.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(request.n, 2);
  EXPECT_EQ(request.params.logprobs, 3);
  EXPECT_TRUE(request.stream && request.include_usage && request.return_token_ids);
  EXPECT_EQ(request.params.min_tokens, 2);
  EXPECT_TRUE(request.params.ignore_eos);
}

TEST(OpenAiProtocol, MalformedJson) {
  const ApiError error = parse_error("{not json");
  EXPECT_EQ(error.status, 400);
  EXPECT_THAT(error.message, HasSubstr("not valid JSON"));
}

TEST(OpenAiProtocol, WrongTypesNameTheField) {
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","temperature":"hot"})").param, "temperature");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","max_tokens":1.5})").param, "max_tokens");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","stream":"yes"})").param, "stream");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":{"a":1}})").param, "prompt");
  EXPECT_EQ(parse_error(R"({"model":5,"prompt":"x"})").param, "model");
  EXPECT_EQ(parse_error(R"({"prompt":"x"})").param, "model");
  EXPECT_EQ(parse_error(R"({"model":"m"})").param, "prompt");
  EXPECT_EQ(parse_error(R"([1,2])").status, 400);
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":[1,-2]})").param, "prompt");
}

TEST(OpenAiProtocol, InvalidSamplingValues) {
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","temperature":-1})").param, "temperature");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","top_p":0})").param, "top_p");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","top_p":1.5})").param, "top_p");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","top_k":-5})").param, "top_k");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","max_tokens":0})").param, "max_tokens");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","n":0})").param, "n");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","logprobs":21})").param, "logprobs");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","min_tokens":20,"max_tokens":4})").param,
            "min_tokens");
  EXPECT_EQ(
      parse_error(R"({"model":"m","prompt":"x","stream_options":{"include_usage":true}})").param,
      "stream_options");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","echo":true})").param, "echo");
}

TEST(OpenAiProtocol, ChatMessages) {
  auto parsed = parse_chat_request(
      R"({"model":"m","messages":[{"role":"system","content":"s"},
          {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
          "logprobs":true,"top_logprobs":2,"chat_template_kwargs":{"enable_thinking":false}})",
      {});
  ASSERT_TRUE(std::holds_alternative<ChatRequest>(parsed));
  const ChatRequest& request = std::get<ChatRequest>(parsed);
  EXPECT_EQ(request.messages[1]["content"], "ab");
  EXPECT_EQ(request.params.logprobs, 2);
  EXPECT_EQ(request.template_kwargs["enable_thinking"], false);
  EXPECT_FALSE(request.max_tokens_given);
}

TEST(OpenAiProtocol, ChatErrors) {
  EXPECT_EQ(chat_error(R"({"model":"m"})").param, "messages");
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[]})").param, "messages");
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})").param,
            "messages");
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[{"content":"x"}]})").param, "messages");
  EXPECT_EQ(
      chat_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})")
          .param,
      "messages");
  EXPECT_EQ(
      chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})")
          .param,
      "top_logprobs");
}

TEST(OpenAiProtocol, ErrorBodyHasTheOpenAiShape) {
  const nlohmann::json body = ApiError::bad_request("bad thing", "temperature").body();
  EXPECT_EQ(body["error"]["message"], "bad thing");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "temperature");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

}  // namespace
}  // namespace tidal
