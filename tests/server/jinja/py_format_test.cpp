// Python's text forms (float repr, string repr, json.dumps) and the ChatTemplate preprocessing
// that mirrors transformers, checked against values CPython produces.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "server/chat_template.h"
#include "server/jinja/py_format.h"

namespace tidal {
namespace {

using Json = nlohmann::ordered_json;
using jinja::Value;

TEST(PyFormat, FloatReprIsShortestRoundTripInPythonLayout) {
  const std::pair<double, const char*> cases[] = {
      {1.0, "1.0"},
      {0.1, "0.1"},
      {-2.5, "-2.5"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {1234567890123456.0, "1234567890123456.0"},
      {0.0001, "0.0001"},
      {0.00001, "1e-05"},
      {1.5e-7, "1.5e-07"},
      {1e100, "1e+100"},
      {-0.0, "-0.0"},
      {0.1 + 0.2, "0.30000000000000004"},
      {123.456, "123.456"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
  };
  for (const auto& [value, expected] : cases)
    EXPECT_EQ(jinja::float_repr(value), expected) << value;
  EXPECT_EQ(jinja::float_repr(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(jinja::float_repr(std::nan("")), "nan");
}

TEST(PyFormat, StringReprPicksQuotesAndEscapes) {
  EXPECT_EQ(jinja::string_repr("abc"), "'abc'");
  EXPECT_EQ(jinja::string_repr("it's"), "\"it's\"");
  EXPECT_EQ(jinja::string_repr("both ' and \""), "'both \\' and \"'");
  EXPECT_EQ(jinja::string_repr("a\nb\t\\\x01\x7f"), "'a\\nb\\t\\\\\\x01\\x7f'");
  EXPECT_EQ(jinja::string_repr("é日👋"), "'é日👋'");
  EXPECT_EQ(jinja::string_repr("\u00a0\u200b\u2028"), "'\\xa0\\u200b\\u2028'");
}

TEST(PyFormat, JsonDumpsOptions) {
  const Value value = Value::from_json(Json::parse(R"({"b": [1, 2.0, null], "a": "é\u0001"})"));
  jinja::JsonOptions options;
  EXPECT_EQ(jinja::to_json(value, options), "{\"b\": [1, 2.0, null], \"a\": \"é\\u0001\"}");
  options.ensure_ascii = true;
  EXPECT_EQ(jinja::to_json(value, options), "{\"b\": [1, 2.0, null], \"a\": \"\\u00e9\\u0001\"}");
  options.ensure_ascii = false;
  options.indent = " ";
  EXPECT_EQ(jinja::to_json(value, options),
            "{\n \"b\": [\n  1,\n  2.0,\n  null\n ],\n \"a\": \"é\\u0001\"\n}");
  options.indent.reset();
  options.sort_keys = true;
  options.item_separator = ",";
  options.key_separator = ":";
  EXPECT_EQ(jinja::to_json(value, options), "{\"a\":\"é\\u0001\",\"b\":[1,2.0,null]}");
  EXPECT_THAT([] { jinja::to_json(Value(), {}); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("not JSON serializable")));
}

TEST(PyFormat, OutputLimitsStopBlowUps) {
  std::vector<Value> items(1000, Value::from_string("0123456789"));
  const Value list = Value::from_list(std::move(items));
  EXPECT_THROW(jinja::repr(list, 100), Error);
  EXPECT_THROW(jinja::to_json(list, {}, 100), Error);
  EXPECT_NO_THROW(jinja::repr(list));
}

TEST(PyFormat, ValuesNestAtMostTheLimit) {
  Json deep = Json::array();
  for (int i = 0; i < jinja::kMaxValueDepth + 5; ++i) deep = Json::array({deep});
  EXPECT_THROW(Value::from_json(deep), Error);
}

TEST(ChatTemplatePreprocessing, DropsNullKeysAndAliasesReasoning) {
  const ChatTemplate chat = ChatTemplate::from_source(
      "{% for m in messages %}{{ m }}\n{% endfor %}{{ tools }} {{ documents }} {{ bos_token is "
      "defined }} "
      "{{ eos_token }} {{ add_generation_prompt }}",
      "", "</s>");
  const Json messages = Json::parse(R"([
      {"role": "assistant", "content": "x", "tool_calls": null, "reasoning": "why"},
      {"role": "assistant", "content": "y", "reasoning_content": "because", "thinking": "old"},
      {"role": "user", "content": null}])");
  EXPECT_EQ(chat.render(messages, true),
            "{'thinking': 'why', 'role': 'assistant', 'content': 'x', 'reasoning': 'why', "
            "'reasoning_content': 'why'}\n"
            "{'thinking': 'old', 'role': 'assistant', 'content': 'y', 'reasoning_content': "
            "'because'}\n"
            "{'role': 'user'}\n"
            "None None False </s> True");
}

TEST(ChatTemplatePreprocessing, ExtrasOverrideSpecialTokensAndPickToolUse) {
  ChatTemplate chat =
      ChatTemplate::from_source("{{ eos_token }}|{{ enable_thinking }}", "<s>", "</s>");
  EXPECT_EQ(chat.render(Json::array(), false, {{"eos_token", "<end>"}, {"enable_thinking", false}}),
            "<end>|False");
  EXPECT_THAT(
      [&] {
        chat.render(Json::array(), false, {{"messages", Json::array()}});
      },
      ::testing::ThrowsMessage<Error>(::testing::HasSubstr("'messages' cannot be passed")));
  EXPECT_THAT(
      [&] {
        chat.render(Json::array(), false, {{"tools", {1}}});
      },
      ::testing::ThrowsMessage<Error>(::testing::HasSubstr("tools must be a list of objects")));
  EXPECT_THAT([&] { chat.render(Json::object(), false); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("messages must be a list")));
}

}  // namespace
}  // namespace tidal
