// RequestOutput: what one engine step produced for one request (new tokens, text, logprobs,
// finish), as it travels to the API layer, also across processes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tidal {

enum class FinishReason { kNone, kStop, kLength, kAbort };
const char* finish_reason_name(FinishReason reason);

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

struct RequestOutput {
  std::string request_id;
  std::vector<int32_t> new_token_ids;
  std::string new_text;
  std::vector<TokenLogprob> new_logprobs;
  // The prompt's logprobs (tokens 1..n-1), in the request's first output when it asked for them.
  std::vector<TokenLogprob> prompt_logprobs = {};
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_prompt_tokens = 0;
  int64_t num_output_tokens = 0;
  // With kAbort from the server's side (not the client's): why it could not be completed.
  std::string error = {};
  bool finished() const { return finish_reason != FinishReason::kNone; }
};

}  // namespace tidal
