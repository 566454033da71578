// The thinking/content split: a three-state machine over the answer's bytes.
#include "server/reasoning_parser.h"

#include <algorithm>

#include "server/partial_tag.h"

namespace tidal {
namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

}  // namespace

std::optional<ReasoningSyntax> reasoning_syntax_named(std::string_view name) {
  if (name == "qwen3") return ReasoningSyntax::kQwen3;
  if (name == "deepseek_r1") return ReasoningSyntax::kDeepseekR1;
  return std::nullopt;
}

bool starts_in_reasoning(ReasoningSyntax syntax, std::string_view rendered_prompt) {
  if (syntax == ReasoningSyntax::kDeepseekR1) return true;
  const size_t end = rendered_prompt.find_last_not_of(" \t\r\n");
  if (end == std::string_view::npos) return false;
  return rendered_prompt.substr(0, end + 1).ends_with(kOpen);
}

ReasoningSplitter::ReasoningSplitter(bool starts_in_reasoning)
    : starts_in_reasoning_(starts_in_reasoning) {}

ReasoningDelta ReasoningSplitter::push(std::string_view text, bool at_end) {
  pending_.append(text);
  ReasoningDelta out;
  drain(out, at_end);
  return out;
}

ReasoningDelta ReasoningSplitter::split(std::string_view answer, bool starts_in_reasoning) {
  return ReasoningSplitter(starts_in_reasoning).push(answer, /*at_end=*/true);
}

void ReasoningSplitter::drain(ReasoningDelta& out, bool at_end) {
  if (state_ == State::kStart) {
    if (std::string_view(pending_).starts_with(kOpen)) {
      pending_.erase(0, kOpen.size());
      state_ = State::kReasoning;
    } else if (!at_end && kOpen.starts_with(pending_)) {
      return;  // still possibly the opening tag (or nothing yet)
    } else {
      state_ = starts_in_reasoning_ ? State::kReasoning : State::kContent;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t close = pending_.find(kClose);
    if (close != std::string::npos) {
      out.reasoning.append(pending_, 0, close);
      pending_.erase(0, close + kClose.size());
      state_ = State::kContent;
    } else {
      const size_t keep = at_end ? 0 : partial_tag_suffix(pending_, kClose);
      out.reasoning.append(pending_, 0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      return;
    }
  }
  out.content += pending_;
  pending_.clear();
}

}  // namespace tidal
