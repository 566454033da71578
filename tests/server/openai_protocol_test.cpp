// Parsing of completion and chat requests: defaults, every field's type and range checks, and
// the error body's shape.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "common/error.h"
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
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","echo":"yes"})").param, "echo");
  EXPECT_EQ(
      chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"echo":true})").param,
      "echo");
  EXPECT_TRUE(std::holds_alternative<ChatRequest>(parse_chat_request(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"echo":false})", {})));
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":"x","prompt_logprobs":21})").param,
            "prompt_logprobs");
  // echo with logprobs scores the prompt too, with at least as many alternatives.
  const CompletionRequest echoed =
      parse_ok(R"({"model":"m","prompt":"x","echo":true,"logprobs":3,"prompt_logprobs":1})");
  EXPECT_TRUE(echoed.echo);
  EXPECT_EQ(echoed.params.prompt_logprobs, 3);
  EXPECT_TRUE(echoed.show_prompt_logprobs);
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

ChatRequest chat_ok(const std::string& body) {
  auto parsed = parse_chat_request(body, {});
  if (auto* error = std::get_if<ApiError>(&parsed)) {
    ADD_FAILURE() << "unexpected error: " << error->message;
    return {};
  }
  return std::get<ChatRequest>(parsed);
}

std::string completion_with(const std::string& fields) {
  return R"({"model":"m","prompt":"x",)" + fields + "}";
}

std::string list_of(const std::string& item, size_t count) {
  std::string text = "[";
  for (size_t i = 0; i < count; ++i) text += (i ? "," : "") + item;
  return text + "]";
}

TEST(OpenAiProtocol, ChatWithoutMaxTokensRunsToTheEndOfTheContext) {
  const ChatRequest request =
      chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  EXPECT_FALSE(request.max_tokens_given);
  EXPECT_EQ(request.params.max_tokens, std::numeric_limits<int64_t>::max());
  // min_tokens is checked against the context left, by the engine, not against 16.
  EXPECT_EQ(chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],"min_tokens":100})")
                .params.min_tokens,
            100);
  EXPECT_EQ(parse_ok(R"({"model":"m","prompt":"x"})").params.max_tokens, 16);
}

TEST(OpenAiProtocol, MaxTokensMustBeAPositiveInt64) {
  EXPECT_EQ(parse_ok(completion_with(R"("max_tokens":9223372036854775807)")).params.max_tokens,
            std::numeric_limits<int64_t>::max());  // Generation::start holds it to the context
  ApiError error = parse_error(completion_with(R"("max_tokens":18446744073709551615)"));
  EXPECT_EQ(error.param, "max_tokens");
  EXPECT_THAT(error.message, HasSubstr("too large"));
  EXPECT_EQ(parse_error(completion_with(R"("max_tokens":1e300)")).param, "max_tokens");
  EXPECT_EQ(parse_error(completion_with(R"("max_tokens":-1)")).param, "max_tokens");
  EXPECT_EQ(parse_error(completion_with(R"("max_completion_tokens":0)")).param,
            "max_completion_tokens");
  EXPECT_EQ(parse_error(completion_with(R"("min_tokens":-1)")).param, "min_tokens");
  EXPECT_EQ(parse_error(completion_with(R"("top_k":4294967297)")).param, "top_k");
  // Seeds are 64-bit patterns: every unsigned one is taken as it is.
  EXPECT_EQ(parse_ok(completion_with(R"("seed":18446744073709551615)")).params.seed,
            std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(parse_ok(completion_with(R"("seed":-1)")).params.seed,
            std::numeric_limits<uint64_t>::max());
}

TEST(OpenAiProtocol, StopLimits) {
  const std::string sixteen = list_of(R"("s")", 16);
  EXPECT_EQ(parse_ok(completion_with(R"("stop":)" + sixteen)).params.stop.size(), 16u);
  ApiError error = parse_error(completion_with(R"("stop":)" + list_of(R"("s")", 17)));
  EXPECT_EQ(error.param, "stop");
  EXPECT_THAT(error.message, HasSubstr("at most 16"));
  error = parse_error(completion_with(R"("stop":")" + std::string(257, 'a') + R"(")"));
  EXPECT_EQ(error.param, "stop");
  EXPECT_THAT(error.message, HasSubstr("256 bytes"));
  EXPECT_EQ(parse_ok(completion_with(R"("stop":[")" + std::string(256, 'a') + R"("])"))
                .params.stop[0]
                .size(),
            256u);
  error = parse_error(completion_with(R"("stop_token_ids":)" + list_of("1", 65)));
  EXPECT_EQ(error.param, "stop_token_ids");
  EXPECT_THAT(error.message, HasSubstr("at most 64"));
}

TEST(OpenAiProtocol, ChoiceAndLogprobLimits) {
  EXPECT_EQ(parse_ok(completion_with(R"("n":128)")).n, 128);
  ApiError error = parse_error(completion_with(R"("n":129)"));
  EXPECT_EQ(error.param, "n");
  EXPECT_THAT(error.message, HasSubstr("128"));
  const std::string prompts = list_of(R"("p")", 129);
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":)" + prompts + "}").param, "prompt");
  error = parse_error(R"({"model":"m","n":100,"prompt":["a","b"]})");
  EXPECT_EQ(error.param, "n");
  EXPECT_THAT(error.message, HasSubstr("200"));
  EXPECT_EQ(parse_ok(R"({"model":"m","n":64,"prompt":["a","b"]})").prompts.size(), 2u);
  EXPECT_EQ(parse_error(completion_with(R"("logprobs":21)")).param, "logprobs");
  EXPECT_EQ(
      chat_error(
          R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})")
          .param,
      "top_logprobs");
}

TEST(OpenAiProtocol, LimitsComeFromTheCaller) {
  const RequestLimits limits{.max_json_depth = 3,
                             .max_stop = 2,
                             .max_stop_bytes = 4,
                             .max_stop_token_ids = 1,
                             .max_choices = 3,
                             .max_logprobs = 2};
  auto error_with = [&](const std::string& body) {
    auto parsed = parse_completion_request(body, {}, limits);
    return std::holds_alternative<ApiError>(parsed) ? std::get<ApiError>(parsed).param : "(none)";
  };
  EXPECT_EQ(error_with(completion_with(R"("stop":["a","b","c"])")), "stop");
  EXPECT_EQ(error_with(completion_with(R"("stop":"abcde")")), "stop");
  EXPECT_EQ(error_with(completion_with(R"("stop_token_ids":[1,2])")), "stop_token_ids");
  EXPECT_EQ(error_with(completion_with(R"("n":4)")), "n");
  EXPECT_EQ(error_with(completion_with(R"("n":2,"prompt":["a","b"])")), "n");
  EXPECT_EQ(error_with(completion_with(R"("logprobs":3)")), "logprobs");
  EXPECT_EQ(error_with(completion_with(R"("x":[[[1]]])")), "x");
  EXPECT_EQ(error_with(completion_with(R"("stop":["abcd","b"],"n":3,"logprobs":2,"x":[[1]])")),
            "(none)");
  // The engine's buffer bounds stop_token_ids whatever the limit says.
  auto parsed = parse_completion_request(completion_with(R"("stop_token_ids":)" + list_of("1", 65)),
                                         {}, {.max_stop_token_ids = 1000});
  ASSERT_TRUE(std::holds_alternative<ApiError>(parsed));
  EXPECT_EQ(std::get<ApiError>(parsed).param, "stop_token_ids");
}

TEST(OpenAiProtocol, DeepNestingIsRefusedBeforeAnythingElse) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "[";
  for (int i = 0; i < 100000; ++i) deep += "]";
  ApiError error =
      chat_error(R"({"model":"m","messages":[{"role":"user","content":)" + deep + "}]}");
  EXPECT_EQ(error.param, "messages");
  EXPECT_THAT(error.message, HasSubstr("64 levels"));
  EXPECT_EQ(parse_error(completion_with(R"("stop":)" + deep)).param, "stop");
  EXPECT_EQ(
      chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":)" + deep + "}")
          .param,
      "tools");
}

// Fields tidal does not implement: the neutral value passes, anything else names the field.
TEST(OpenAiProtocol, SamplingControlsAreParsedAndChecked) {
  const CompletionRequest request = parse_ok(completion_with(
      R"("presence_penalty":0.5,"frequency_penalty":-1,"repetition_penalty":1.3,"min_p":0.05,)"
      R"("logit_bias":{"7":250,"3":-2.5},"allowed_token_ids":[4,9],"bad_words":["no"])"));
  const SamplingParams& params = request.params;
  EXPECT_FLOAT_EQ(params.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(params.frequency_penalty, -1.0f);
  EXPECT_FLOAT_EQ(params.repetition_penalty, 1.3f);
  EXPECT_FLOAT_EQ(params.min_p, 0.05f);
  // Sorted by id, and clamped to OpenAI's [-100, 100].
  ASSERT_EQ(params.logit_bias.size(), 2u);
  EXPECT_EQ(params.logit_bias[0], std::make_pair(3, -2.5f));
  EXPECT_EQ(params.logit_bias[1], std::make_pair(7, 100.0f));
  EXPECT_EQ(params.allowed_token_ids, (std::vector<int32_t>{4, 9}));
  EXPECT_EQ(request.bad_words, (std::vector<std::string>{"no"}));
  EXPECT_TRUE(params.needs_adjusted_sampling());
  for (const auto& [field, body] : std::vector<std::pair<std::string, std::string>>{
           {"presence_penalty", R"("presence_penalty":2.5)"},
           {"frequency_penalty", R"("frequency_penalty":-3)"},
           {"repetition_penalty", R"("repetition_penalty":0)"},
           {"min_p", R"("min_p":1.5)"},
           {"logit_bias", R"("logit_bias":{"x":1})"},
           {"logit_bias", R"("logit_bias":{"1":"a"})"},
           {"logit_bias", R"("logit_bias":[1])"},
           {"allowed_token_ids", R"("allowed_token_ids":[])"},
           {"allowed_token_ids", R"("allowed_token_ids":[-1])"},
           {"bad_words", R"("bad_words":[""])"},
           {"bad_words", R"("bad_words":"x")"},
       }) {
    EXPECT_EQ(parse_error(completion_with(body)).param, field) << body;
  }
}

TEST(OpenAiProtocol, UnimplementedFieldsAreRefusedUnlessNeutral) {
  struct Case {
    const char* field;
    const char* neutral;
    const char* other;
  };
  const Case cases[] = {
      {"tool_choice", R"("none")", R"("required")"},
      {"tool_choice", R"("auto")", R"({"type":"function","function":{"name":"f"}})"},
      {"parallel_tool_calls", "true", R"("yes")"},
      {"functions", "[]", R"([{"name":"f"}])"},
      {"function_call", R"("none")", R"({"name":"f"})"},
      {"suffix", R"("")", R"("tail")"},
      {"best_of", "1", "2"},
      {"modalities", R"(["text"])", R"(["text","audio"])"},
      {"audio", "null", R"({"voice":"alloy"})"},
      {"prediction", "null", R"({"type":"content","content":"x"})"},
      {"use_beam_search", "false", "true"},
      {"include_stop_str_in_output", "false", "true"},
  };
  for (const Case& c : cases) {
    const std::string neutral = cat(R"(")", c.field, R"(":)", c.neutral);
    const std::string other = cat(R"(")", c.field, R"(":)", c.other);
    parse_ok(completion_with(neutral));
    chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],)" + neutral + "}");
    const ApiError error = parse_error(completion_with(other));
    EXPECT_EQ(error.param, c.field) << other;
    EXPECT_THAT(error.message, HasSubstr(cat("tidal does not implement '", c.field, "' yet")));
    EXPECT_EQ(
        chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],)" + other + "}")
            .param,
        c.field);
  }
  // parallel_tool_calls=false asks something of tool calls: fine without tools, not with them.
  chat_ok(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"parallel_tool_calls":false})");
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[{"role":"user","content":"x"}],
                           "tools":[{"type":"function","function":{"name":"f"}}],
                           "parallel_tool_calls":false})")
                .param,
            "parallel_tool_calls");
  // Fields nobody defines, and OpenAI's bookkeeping ones, are ignored.
  parse_ok(completion_with(R"("user":"u","store":false,"metadata":{"a":"b"},"whatever":[1])"));
}

// Structured output: OpenAI's response_format and vLLM's fields, one per request, each into the
// same StructuredOutput; a JSON schema keeps the client's key order (properties come out in it).
TEST(OpenAiProtocol, StructuredOutputFields) {
  using Kind = StructuredOutput::Kind;
  const auto parsed = [](const std::string& fields) {
    return parse_ok(completion_with(fields)).params.structured_output;
  };
  EXPECT_FALSE(parsed(R"("response_format":{"type":"text"})").active());
  EXPECT_EQ(parsed(R"("response_format":{"type":"json_object"})").kind, Kind::kJsonObject);
  const StructuredOutput schema = parsed(
      R"("response_format":{"type":"json_schema","json_schema":{"name":"p","schema":)"
      R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}}}}})");
  EXPECT_EQ(schema.kind, Kind::kJsonSchema);
  EXPECT_EQ(schema.field, "response_format");
  EXPECT_EQ(
      schema.spec,
      R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}}})");
  EXPECT_EQ(parsed(R"("guided_json":"{\"type\":\"object\"}")").spec, R"({"type":"object"})");
  EXPECT_EQ(parsed(R"("guided_regex":"[a-z]+")").kind, Kind::kRegex);
  const StructuredOutput choice = parsed(R"("guided_choice":["yes","no"])");
  EXPECT_EQ(choice.kind, Kind::kChoice);
  EXPECT_EQ(choice.spec, R"(["yes","no"])");
  EXPECT_EQ(parsed(R"("guided_grammar":"root ::= \"a\"")").kind, Kind::kGrammar);
  EXPECT_EQ(parsed(R"("structured_outputs":{"choice":["a","b"]})").field, "structured_outputs");
  EXPECT_EQ(
      parsed(R"("structured_outputs":{"json":{"type":"object","properties":{"b":{},"a":{}}}})")
          .spec,
      R"({"type":"object","properties":{"b":{},"a":{}}})");
  EXPECT_EQ(parsed(R"("structured_outputs":{"json_object":true})").kind, Kind::kJsonObject);

  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"("response_format":{"type":"xml"})", "response_format"},
           {R"("response_format":{"type":"json_schema"})", "response_format"},
           {R"("guided_choice":[])", "guided_choice"},
           {R"("guided_choice":["a",1])", "guided_choice"},
           {R"("guided_regex":"")", "guided_regex"},
           {R"("guided_json":"not json")", "guided_json"},
           {R"("structured_outputs":{"yaml":"x"})", "structured_outputs"},
           {R"("guided_regex":"a","guided_choice":["a"])", "guided_choice"},
       }) {
    EXPECT_EQ(parse_error(completion_with(body)).param, field) << body;
  }
}

TEST(OpenAiProtocol, EmptyToolsAreNoTools) {
  EXPECT_FALSE(chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]})")
                   .template_kwargs.contains("tools"));
  EXPECT_TRUE(chat_ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],
                          "tools":[{"type":"function","function":{"name":"f"}}]})")
                  .template_kwargs.contains("tools"));
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
