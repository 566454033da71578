// libFuzzer target: any bytes as a completion or chat request body. The parser must answer with
// a request or an ApiError; nothing may crash or escape.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/openai_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const tidal::SamplingDefaults defaults{.temperature = 0.6f, .top_p = 0.9f, .top_k = 20};
  (void)tidal::parse_completion_request(body, defaults);
  (void)tidal::parse_chat_request(body, defaults);
  return 0;
}
