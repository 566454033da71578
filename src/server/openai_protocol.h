// The OpenAI wire format: request bodies parsed and validated into typed requests, and the
// response, chunk and error bodies. No I/O here, so it is unit-testable and fuzzable.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampling_params.h"

namespace tidal {

// An error as the API reports it: HTTP status and an OpenAI-style body.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field, when there is one
  std::string code;

  nlohmann::json body() const;
  static ApiError bad_request(std::string message, std::string param = "");
};

// The model's generation_config.json sampling defaults, used where a request says nothing.
struct SamplingDefaults {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int32_t> top_k;
  static SamplingDefaults from_model_dir(const std::string& directory);
};

// What one request may ask for. Each bound keeps a single request from costing the server far more
// than its share (memory, time, or the engine's fixed-size buffers); a request past one gets a
// 400 that names the field and the limit. `tidal serve` flags set them.
struct RequestLimits {
  int32_t max_json_depth = 64;   // nesting of arrays and objects in the body (its object is 1)
  int32_t max_stop = 16;         // stop strings
  int32_t max_stop_bytes = 256;  // bytes of one stop string
  int32_t max_stop_token_ids = static_cast<int32_t>(kMaxStopTokenIds);  // at most that (engine)
  int32_t max_choices = 128;  // n, and prompts x n of a completion
  int32_t max_logprobs = 20;  // logprobs / top_logprobs; the engine takes 20 at most
};

using Prompt = std::variant<std::string, std::vector<int32_t>>;

// The fields both endpoints share.
struct GenerationRequest {
  std::string model;
  SamplingParams params;
  // When absent, completions take 16 tokens (OpenAI's default) and chat runs to EOS or the end of
  // the context (params.max_tokens is then int64 max until Generation::start bounds it).
  bool max_tokens_given = false;
  std::string max_tokens_field = "max_tokens";  // or max_completion_tokens, as the client named it
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  // vLLM's bad_words, as text: the server tokenizes them into params.bad_words_ids.
  std::vector<std::string> bad_words;
  // Whether text prompts get the tokenizer's special tokens (its post-processor's BOS, say): vLLM's
  // defaults, true for completions and false for chat (whose template writes them).
  bool add_special_tokens = true;
  bool show_prompt_logprobs = false;  // the client asked for prompt_logprobs (vLLM's field)
};

struct CompletionRequest : GenerationRequest {
  std::vector<Prompt> prompts;  // one choice set per prompt
  bool echo = false;            // the text starts with the prompt (and logprobs, with its tokens)
};

// What a chat template renders: shared by chat completions and /tokenize.
struct ChatInputs {
  nlohmann::ordered_json messages;  // content normalised to strings
  bool add_generation_prompt = true;
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // tools, ...
  std::optional<std::string> chat_template;  // the request's own template, replacing the model's
};

struct ChatRequest : GenerationRequest, ChatInputs {
  bool logprobs = false;  // chat's logprobs is a bool plus top_logprobs
  // "auto" (the default when tools are given: calls are parsed into tool_calls) or "none" (tools
  // still reach the template; the answer stays text). "required" and a named function need
  // constrained decoding and are refused.
  std::string tool_choice = "none";
};

// vLLM's POST /tokenize: a prompt, or chat messages rendered by the template first.
struct TokenizeRequest {
  std::optional<std::string> model;  // checked against the served name when given
  std::optional<std::string> prompt;
  std::optional<ChatInputs> chat;  // set when the body has "messages"
  bool add_special_tokens = true;  // vLLM's defaults: true for a prompt, false for messages
  bool return_token_strs = false;
};

// vLLM's POST /detokenize.
struct DetokenizeRequest {
  std::optional<std::string> model;
  std::vector<int32_t> tokens;
};

// Parse and validate; on failure the ApiError names the field. Fields of the OpenAI API that
// tidal does not implement are refused unless they hold their neutral value (presence_penalty 0,
// logit_bias {}, ...); fields nobody defines are ignored, as vLLM does.
std::variant<CompletionRequest, ApiError> parse_completion_request(
    std::string_view body, const SamplingDefaults& defaults, const RequestLimits& limits = {});
std::variant<ChatRequest, ApiError> parse_chat_request(std::string_view body,
                                                       const SamplingDefaults& defaults,
                                                       const RequestLimits& limits = {});

std::variant<TokenizeRequest, ApiError> parse_tokenize_request(std::string_view body,
                                                               const RequestLimits& limits = {});
std::variant<DetokenizeRequest, ApiError> parse_detokenize_request(
    std::string_view body, const RequestLimits& limits = {});

}  // namespace tidal
