// libFuzzer target: any bytes as a chat template, parsed and rendered against a small fixed
// conversation. Bad templates must end in tidal::Error; nothing else may escape, crash or hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "server/jinja/template.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json variables = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi <tool_response>x</tool_response> 👋"},
      {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello",
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null]}}}]},
      {"role": "tool", "content": "{\"ok\": true}"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
               "parameters": {"type": "object", "properties": {"a": {"type": "array"}}}}}],
    "documents": null,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "add_generation_prompt": true,
    "enable_thinking": false
  })");
  return variables;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Long inputs only slow the search down; a template's trouble shows in a few kilobytes.
  if (size > 8192) return 0;
  const std::string source(reinterpret_cast<const char*>(data), size);
  tidal::jinja::RenderOptions options;
  options.limits.max_output_bytes = size_t{1} << 20;
  options.limits.max_steps = 2'000'000;
  options.clock = [] { return std::time_t{1721995200}; };
  try {
    tidal::jinja::Template::parse(source).render(context(), options);
  } catch (const tidal::Error&) {
    // Refusing a template is the expected outcome for most inputs.
  }
  return 0;
}
