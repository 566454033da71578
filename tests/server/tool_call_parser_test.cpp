// Hermes tool calls: whole answers, and every way a stream may cut them.
#include "server/tool_call_parser.h"

#include "server/response_format.h"

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

TEST(ToolCallSplitter, ArgumentsKeepTheOrderTheModelWrote) {
  expect_split(
      R"(<tool_call>{"name": "a", "arguments": {"unit": "C", "city": "Paris"}}</tool_call>)",
      {"", {{"a", R"({"unit":"C","city":"Paris"})"}}});
}

TEST(ToolCallSplitter, ArgumentsNestedPastTheRequestLimitAreNotACall) {
  const std::string deep = std::string(65, '[') + std::string(65, ']');
  const std::string block =
      R"(<tool_call>{"name": "a", "arguments": {"x": )" + deep + "}}</tool_call>";
  const ToolCallDelta split = ToolCallSplitter::split(block);
  EXPECT_TRUE(split.calls.empty());
  EXPECT_EQ(split.content, block);
}

TEST(ToolCallSplitter, ALongOpenBodyIsHeldWholeUntilTheEnd) {
  // 200,000 one-byte pushes into an open block (each push searches only what is new).
  ToolCallSplitter splitter;
  splitter.push("<tool_call>");
  for (int i = 0; i < 200000; ++i) EXPECT_TRUE(splitter.push("x").content.empty());
  const ToolCallDelta rest = splitter.finish();
  EXPECT_EQ(rest.content.size(), std::string("<tool_call>").size() + 200000);
}

TEST(ToolCallSplitter, ACompleteCallTheModelLeftOpen) {
  expect_split("<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"x\"}}\n",
               {"", {{"a", R"({"q":"x"})"}}});
}

// Thinking is taken out first, then calls from what is left, at every cut of the stream.
TEST(ChoiceStream, ThinkingThenCallsChained) {
  const std::string answer =
      "<think>plan</think>\n\nok <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>";
  for (size_t cut = 0; cut <= answer.size(); ++cut) {
    ChoiceStream stream;
    stream.reasoning.emplace(false);
    stream.tools.emplace();
    const ChatPiece first = stream.push(answer.substr(0, cut), false);
    const ChatPiece last = stream.push(answer.substr(cut), true);
    EXPECT_EQ(first.reasoning + last.reasoning, "plan") << cut;
    EXPECT_EQ(first.content + last.content, "\n\nok ") << cut;
    ASSERT_EQ(first.calls.size() + last.calls.size(), 1u) << cut;
    EXPECT_EQ(stream.tools->num_calls(), 1u);
  }
}

}  // namespace
}  // namespace tidal
