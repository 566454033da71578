// The thinking/content split: whole answers, and every way a stream may cut them.
#include "server/reasoning_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tidal {
namespace {

struct Expected {
  std::string reasoning;
  std::string content;
};

// Splits `answer` whole, then streamed in pieces cut at every pair of positions: all must agree.
void expect_split(const std::string& answer, bool starts_in_thinking, const Expected& expected) {
  const ReasoningDelta whole = ReasoningSplitter::split(answer, starts_in_thinking);
  EXPECT_EQ(whole.reasoning, expected.reasoning) << answer;
  EXPECT_EQ(whole.content, expected.content) << answer;
  for (size_t a = 0; a <= answer.size(); ++a) {
    for (size_t b = a; b <= answer.size(); ++b) {
      ReasoningSplitter splitter(starts_in_thinking);
      std::string reasoning, content;
      for (const std::string& piece :
           {answer.substr(0, a), answer.substr(a, b - a), answer.substr(b)}) {
        const ReasoningDelta delta = splitter.push(piece);
        reasoning += delta.reasoning;
        content += delta.content;
      }
      const ReasoningDelta rest = splitter.finish();
      ASSERT_EQ(reasoning + rest.reasoning, expected.reasoning)
          << answer << " cut at " << a << ", " << b;
      ASSERT_EQ(content + rest.content, expected.content) << answer << " cut at " << a << ", " << b;
    }
  }
}

TEST(ReasoningSplitter, ThinkingThenContent) {
  expect_split("<think>\nsum the tides\n</think>\n\nTwo.", false,
               {"\nsum the tides\n", "\n\nTwo."});
  expect_split("<think>\nsum the tides\n</think>\n\nTwo.", true, {"\nsum the tides\n", "\n\nTwo."});
}

TEST(ReasoningSplitter, NoTagIsContentUnlessThePromptOpenedTheBlock) {
  expect_split("Two tides a day.", false, {"", "Two tides a day."});
  expect_split("Two tides a day.", true, {"Two tides a day.", ""});
  expect_split("weigh it</think>Two.", true, {"weigh it", "Two."});
  // Without an opening, a closing tag is just text.
  expect_split("a</think>b", false, {"", "a</think>b"});
}

TEST(ReasoningSplitter, UnclosedThinkingStaysThinking) {
  expect_split("<think>still weighing the moon", false, {"still weighing the moon", ""});
  expect_split("<think>ends on a partial </thi", false, {"ends on a partial </thi", ""});
}

TEST(ReasoningSplitter, PartialTagsThatDoNotComplete) {
  expect_split("<thin", false, {"", "<thin"});
  expect_split("<thinking>", false, {"", "<thinking>"});
  expect_split("<think></thinker></think>x", false, {"</thinker>", "x"});
  expect_split("", false, {"", ""});
  expect_split("", true, {"", ""});
}

TEST(ReasoningSplitter, OnlyTheFirstCloseEnds) {
  expect_split("<think>a</think>b</think>c", false, {"a", "b</think>c"});
  expect_split("<think>a</think><think>b", false, {"a", "<think>b"});
}

TEST(ReasoningSyntax, NamesAndWhereAnswersStart) {
  EXPECT_EQ(reasoning_syntax_named("qwen3"), ReasoningSyntax::kQwen3);
  EXPECT_EQ(reasoning_syntax_named("deepseek_r1"), ReasoningSyntax::kDeepseekR1);
  EXPECT_FALSE(reasoning_syntax_named("r1").has_value());
  EXPECT_TRUE(starts_in_reasoning(ReasoningSyntax::kDeepseekR1, "<|Assistant|>"));
  EXPECT_FALSE(starts_in_reasoning(ReasoningSyntax::kQwen3, "<|im_start|>assistant\n"));
  EXPECT_TRUE(starts_in_reasoning(ReasoningSyntax::kQwen3, "<|im_start|>assistant\n<think>\n"));
  // enable_thinking=false renders an empty, closed block: the answer is content.
  EXPECT_FALSE(starts_in_reasoning(ReasoningSyntax::kQwen3,
                                   "<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(starts_in_reasoning(ReasoningSyntax::kQwen3, ""));
}

}  // namespace
}  // namespace tidal
