// Hermes tool calls: text outside blocks streams through; a block's body is held until it closes.
#include "server/tool_call_parser.h"

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

#include "server/partial_tag.h"

namespace tidal {
namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";

bool all_whitespace(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// The deepest nesting of arrays and objects in JSON text (strings skipped), so that model output
// nested past what a request may be is refused before the recursive parser and dump see it.
int nesting_of(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

constexpr int kMaxCallNesting = 64;  // as a request body's default --max-json-depth

// The call a block's body holds, if it is one. Ordered: the arguments keep the order the model
// wrote them in, which a client sends back and the template renders again.
std::optional<ToolCall> parse_call(std::string_view body) {
  if (nesting_of(body) > kMaxCallNesting) return std::nullopt;
  using Json = nlohmann::ordered_json;
  const Json call = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!call.is_object() || !call.contains("name") || !call["name"].is_string()) return std::nullopt;
  const char* key = call.contains("arguments") ? "arguments" : "parameters";
  Json arguments = call.contains(key) ? call[key] : Json::object();
  // Some models write the arguments as a JSON string already.
  if (arguments.is_string()) {
    const auto& text = arguments.get_ref<const std::string&>();
    if (nesting_of(text) > kMaxCallNesting) return std::nullopt;
    arguments = Json::parse(text, nullptr, false);
  }
  if (!arguments.is_object()) return std::nullopt;
  return ToolCall{.name = call["name"].get<std::string>(), .arguments = arguments.dump()};
}

}  // namespace

ToolCallDelta ToolCallSplitter::push(std::string_view text, bool at_end) {
  pending_.append(text);
  ToolCallDelta out;
  drain(out, at_end);
  return out;
}

ToolCallDelta ToolCallSplitter::split(std::string_view answer) {
  return ToolCallSplitter().push(answer, /*at_end=*/true);
}

void ToolCallSplitter::drain(ToolCallDelta& out, bool at_end) {
  for (;;) {
    if (in_block_) {
      // Only where the tag could not have been before: a long open body is not searched again.
      const size_t from = searched_ > kClose.size() ? searched_ - kClose.size() : 0;
      const size_t close = pending_.find(kClose, from);
      if (close == std::string::npos && !at_end) {
        searched_ = pending_.size();
        return;  // the body is not complete yet
      }
      searched_ = 0;
      const std::string_view body = std::string_view(pending_).substr(0, close);
      if (std::optional<ToolCall> call = parse_call(body)) {
        out.calls.push_back(std::move(*call));
        ++num_calls_;
      } else {
        // Not a call: the block stays text, exactly as written.
        out.content.append(kOpen);
        out.content.append(pending_, 0,
                           close == std::string::npos ? pending_.size() : close + kClose.size());
      }
      pending_.erase(0, close == std::string::npos ? pending_.size() : close + kClose.size());
      in_block_ = false;
      if (close == std::string::npos) return;
      continue;
    }
    const size_t open = pending_.find(kOpen);
    if (open != std::string::npos) {
      const std::string_view before = std::string_view(pending_).substr(0, open);
      if (num_calls_ == 0 || !all_whitespace(before)) out.content.append(before);
      pending_.erase(0, open + kOpen.size());
      in_block_ = true;
      continue;
    }
    // No block opens in what is here: emit all but bytes that may begin one. Between calls,
    // whitespace waits too, since it is dropped if another block follows.
    size_t keep = at_end ? 0 : partial_tag_suffix(pending_, kOpen);
    if (!at_end && num_calls_ > 0 &&
        all_whitespace(std::string_view(pending_).substr(0, pending_.size() - keep))) {
      return;
    }
    if (at_end && num_calls_ > 0 && all_whitespace(pending_)) keep = pending_.size();
    out.content.append(pending_, 0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    if (at_end) pending_.clear();
    return;
  }
}

}  // namespace tidal
