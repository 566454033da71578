// Hermes tool calls: whole answers, and every way a stream may cut them.
#include "server/tool_call_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tidal {
namespace {

struct Expected {
  std::string content;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
};

std::vector<std::pair<std::string, std::string>> flat(const std::vector<ToolCall>& calls) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const ToolCall& call : calls) out.emplace_back(call.name, call.arguments);
  return out;
}

// Splits `answer` whole, then streamed in three pieces cut at every pair of positions.
void expect_split(const std::string& answer, const Expected& expected) {
  const ToolCallDelta whole = ToolCallSplitter::split(answer);
  EXPECT_EQ(whole.content, expected.content) << answer;
  EXPECT_EQ(flat(whole.calls), expected.calls) << answer;
  for (size_t a = 0; a <= answer.size(); ++a) {
    for (size_t b = a; b <= answer.size(); ++b) {
      ToolCallSplitter splitter;
      std::string content;
      std::vector<ToolCall> calls;
      for (const std::string& piece :
           {answer.substr(0, a), answer.substr(a, b - a), answer.substr(b)}) {
        ToolCallDelta delta = splitter.push(piece);
        content += delta.content;
        calls.insert(calls.end(), delta.calls.begin(), delta.calls.end());
      }
      ToolCallDelta rest = splitter.finish();
      content += rest.content;
      calls.insert(calls.end(), rest.calls.begin(), rest.calls.end());
      ASSERT_EQ(content, expected.content) << answer << " cut at " << a << ", " << b;
      ASSERT_EQ(flat(calls), expected.calls) << answer << " cut at " << a << ", " << b;
      ASSERT_EQ(splitter.num_calls(), expected.calls.size());
    }
  }
}

TEST(ToolCallSplitter, PlainTextIsContent) {
  expect_split("Paris is sunny.", {"Paris is sunny.", {}});
  expect_split("", {"", {}});
  expect_split("a <tool_ b", {"a <tool_ b", {}});
}

TEST(ToolCallSplitter, OneCallAfterSomeText) {
  expect_split(
      "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
      "{\"city\": \"Paris\"}}\n</tool_call>",
      {"Let me look.\n", {{"get_weather", R"({"city":"Paris"})"}}});
}

TEST(ToolCallSplitter, SeveralCallsAndTheWhitespaceBetween) {
  expect_split(
      "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n\n"
      "<tool_call>{\"name\": \"b\", \"parameters\": {\"x\": 1}}</tool_call>\n",
      {"", {{"a", "{}"}, {"b", R"({"x":1})"}}});
  // Text after a call is content, its whitespace included.
  expect_split("<tool_call>{\"name\": \"a\"}</tool_call>\nDone.", {"\nDone.", {{"a", "{}"}}});
}

TEST(ToolCallSplitter, ArgumentsWrittenAsAString) {
  expect_split(R"(<tool_call>{"name": "a", "arguments": "{\"k\": [1, 2]}"}</tool_call>)",
               {"", {{"a", R"({"k":[1,2]})"}}});
}

TEST(ToolCallSplitter, WhatIsNotACallStaysAsWritten) {
  expect_split("<tool_call>not json</tool_call>", {"<tool_call>not json</tool_call>", {}});
  expect_split(R"(<tool_call>{"arguments": {}}</tool_call>)",
               {R"(<tool_call>{"arguments": {}}</tool_call>)", {}});
  expect_split(R"(<tool_call>{"name": "a", "arguments": 3}</tool_call>)",
               {R"(<tool_call>{"name": "a", "arguments": 3}</tool_call>)", {}});
  expect_split("<tool_call>{\"name\": \"a\", \"argu", {"<tool_call>{\"name\": \"a\", \"argu", {}});
}

TEST(ToolCallSplitter, ACompleteCallTheModelLeftOpen) {
  expect_split("<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"x\"}}\n",
               {"", {{"a", R"({"q":"x"})"}}});
}

}  // namespace
}  // namespace tidal
