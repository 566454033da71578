// The OpenAI wire format: request bodies parsed and validated into typed requests, and the
// response, chunk and error bodies. No I/O here, so it is unit-testable and fuzzable.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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

using Prompt = std::variant<std::string, std::vector<int32_t>>;

// The fields both endpoints share.
struct GenerationRequest {
  std::string model;
  SamplingParams params;
  bool max_tokens_given = false;  // chat fills in the rest of the context when absent
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
};

struct CompletionRequest : GenerationRequest {
  std::vector<Prompt> prompts;  // one choice set per prompt
};

struct ChatRequest : GenerationRequest {
  nlohmann::ordered_json messages;  // content normalised to strings
  bool add_generation_prompt = true;
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // tools, ...
  bool logprobs = false;  // chat's logprobs is a bool plus top_logprobs
};

// Parse and validate; on failure the ApiError names the field.
std::variant<CompletionRequest, ApiError> parse_completion_request(
    const std::string& body, const SamplingDefaults& defaults);
std::variant<ChatRequest, ApiError> parse_chat_request(const std::string& body,
                                                       const SamplingDefaults& defaults);

}  // namespace tidal
