// libFuzzer target: any bytes as a completion or chat request body. The parser must answer with
// a request or an ApiError; nothing may crash or escape, and no value deeper than the limit may
// come out of the depth-bounded JSON parser.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "server/openai_protocol.h"
#include "server/reasoning_parser.h"
#include "server/request_json.h"
#include "server/tool_call_parser.h"

namespace {

// Iterative, so that checking a deep value cannot itself overflow the stack.
int32_t depth_of(const nlohmann::json& root) {
  int32_t deepest = 0;
  std::vector<std::pair<const nlohmann::json*, int32_t>> pending = {{&root, 0}};
  while (!pending.empty()) {
    const auto [value, above] = pending.back();
    pending.pop_back();
    if (!value->is_structured()) continue;
    deepest = std::max(deepest, above + 1);
    for (const nlohmann::json& child : *value) pending.emplace_back(&child, above + 1);
  }
  return deepest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const tidal::SamplingDefaults defaults{.temperature = 0.6f, .top_p = 0.9f, .top_k = 20};
  (void)tidal::parse_completion_request(body, defaults);
  (void)tidal::parse_chat_request(body, defaults);
  // Tight limits reach every cap with small inputs.
  const tidal::RequestLimits tight{.max_json_depth = 4,
                                   .max_stop = 2,
                                   .max_stop_bytes = 8,
                                   .max_stop_token_ids = 2,
                                   .max_choices = 3,
                                   .max_logprobs = 2};
  (void)tidal::parse_completion_request(body, defaults, tight);
  (void)tidal::parse_chat_request(body, defaults, tight);
  (void)tidal::parse_tokenize_request(body);
  (void)tidal::parse_detokenize_request(body);
  (void)tidal::parse_tokenize_request(body, tight);
  // The answer splitters: any text, cut anywhere, must split as the whole does.
  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  for (const bool thinking_first : {false, true}) {
    const tidal::ReasoningDelta whole = tidal::ReasoningSplitter::split(body, thinking_first);
    tidal::ReasoningSplitter streamed(thinking_first);
    tidal::ReasoningDelta first = streamed.push(std::string_view(body).substr(0, cut));
    const tidal::ReasoningDelta second = streamed.push(std::string_view(body).substr(cut));
    const tidal::ReasoningDelta rest = streamed.finish();
    if (first.reasoning + second.reasoning + rest.reasoning != whole.reasoning ||
        first.content + second.content + rest.content != whole.content) {
      std::abort();
    }
  }
  {
    const tidal::ToolCallDelta whole = tidal::ToolCallSplitter::split(body);
    tidal::ToolCallSplitter streamed;
    const tidal::ToolCallDelta first = streamed.push(std::string_view(body).substr(0, cut));
    const tidal::ToolCallDelta second = streamed.push(std::string_view(body).substr(cut));
    const tidal::ToolCallDelta rest = streamed.finish();
    if (first.content + second.content + rest.content != whole.content ||
        first.calls.size() + second.calls.size() + rest.calls.size() != whole.calls.size()) {
      std::abort();
    }
  }
  for (const int32_t max_depth : {1, 4, 64}) {
    const auto parsed = tidal::parse_request_json(body, max_depth);
    if (const auto* value = std::get_if<nlohmann::json>(&parsed);
        value != nullptr && depth_of(*value) > max_depth) {
      std::abort();
    }
  }
  return 0;
}
