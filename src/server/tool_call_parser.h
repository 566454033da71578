// Tool calls in a chat answer, in the Hermes format Qwen2.5/Qwen3 (and vLLM's `hermes` parser) use:
//   <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
// for whole answers and for streams that arrive in pieces (`--tool-call-parser hermes`).
//
// The rule, the same whole or streamed (a stream's pieces add up to the whole answer's calls and
// content wherever they are cut):
//  - text before the first "<tool_call>" is content;
//  - each <tool_call>...</tool_call> block whose body is a JSON object with a string "name" (and
//    "arguments", or "parameters", an object or absent) is a call; its arguments are passed on as
//    the JSON text OpenAI's API carries;
//  - a block that is not such a call stays in the content as it was written, tags included, so
//    nothing the model wrote is lost; so does a block the answer leaves open, unless its body is
//    a complete call (the model stopped before writing "</tool_call>");
//  - after the first call, whitespace between blocks is dropped; other text is content.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tidal {

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object's text
};

struct ToolCallDelta {
  std::string content;
  std::vector<ToolCall> calls;  // calls completed by this piece, in order
};

class ToolCallSplitter {
 public:
  // The parts of `text` (the answer's next bytes) that can be told apart now; bytes that may
  // begin a tag, and the body of an open block, are held until the next push, or settled too
  // when `at_end` (the answer ends).
  ToolCallDelta push(std::string_view text, bool at_end = false);
  // The held bytes, at the end of the answer.
  ToolCallDelta finish() { return push({}, /*at_end=*/true); }
  // Calls found so far (across push and finish).
  size_t num_calls() const { return num_calls_; }

  // push(answer) + finish() of a fresh splitter.
  static ToolCallDelta split(std::string_view answer);

 private:
  void drain(ToolCallDelta& out, bool at_end);

  bool in_block_ = false;
  size_t num_calls_ = 0;
  std::string pending_;  // outside a block: bytes not yet emitted; inside: the block's body
  size_t searched_ = 0;  // inside a block: bytes of pending_ already searched for the close
};

}  // namespace tidal
