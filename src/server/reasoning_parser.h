// Separates a chat answer's thinking (<think>...</think>) from its content, as vLLM's
// --reasoning-parser does, for whole answers and for streams that arrive in pieces.
//
// One rule for both syntaxes, the same whole or streamed (a stream's pieces always add up to the
// whole answer's split, wherever the pieces are cut):
//  - an answer that begins with "<think>" is thinking until "</think>", content after; the tags
//    themselves are dropped;
//  - an answer that does not begin with it is content (qwen3), unless the prompt already opened
//    the block: DeepSeek-R1's template always ends the prompt with "<think>\n" (deepseek_r1 starts
//    in thinking whatever the prompt), and so do thinking-only Qwen3 templates (qwen3 starts in
//    thinking when the rendered prompt ends with "<think>", trailing whitespace aside);
//  - thinking that never closes (max_tokens reached) stays thinking: it is never moved to the
//    content after the fact, which a stream could not do.
// Content is not trimmed: the "\n\n" a model writes after "</think>" stays, as vLLM keeps it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tidal {

enum class ReasoningSyntax { kQwen3, kDeepseekR1 };

// "qwen3" or "deepseek_r1"; nullopt for anything else.
std::optional<ReasoningSyntax> reasoning_syntax_named(std::string_view name);

// Whether an answer to this rendered prompt starts inside the thinking block.
bool starts_in_reasoning(ReasoningSyntax syntax, std::string_view rendered_prompt);

struct ReasoningDelta {
  std::string reasoning;
  std::string content;
};

class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(bool starts_in_reasoning);

  // The parts of `text` (the answer's next bytes) that can be told apart now; bytes that may
  // begin a tag are held until the next push, or returned too when `at_end` (the answer ends).
  ReasoningDelta push(std::string_view text, bool at_end = false);
  // The held bytes, at the end of the answer.
  ReasoningDelta finish() { return push({}, /*at_end=*/true); }

  // push(answer) + finish() of a fresh splitter.
  static ReasoningDelta split(std::string_view answer, bool starts_in_reasoning);

 private:
  enum class State { kStart, kReasoning, kContent };
  void drain(ReasoningDelta& out, bool at_end);

  State state_ = State::kStart;
  bool starts_in_reasoning_;
  std::string pending_;
};

}  // namespace tidal
