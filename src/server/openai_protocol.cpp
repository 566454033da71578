// Parsing and validation of OpenAI completion and chat requests.
#include "server/openai_protocol.h"

#include <cmath>
#include <fstream>
#include <limits>

#include "common/error.h"

namespace tidal {
namespace {

// Thrown inside the parser and turned into an ApiError at its boundary.
struct ParseFailure {
  ApiError error;
};

[[noreturn]] void fail(const std::string& param, const std::string& message) {
  throw ParseFailure{ApiError::bad_request(message, param)};
}

const nlohmann::json* field(const nlohmann::json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<float> number_field(const nlohmann::json& body, const char* name) {
  const nlohmann::json* value = field(body, name);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) fail(name, cat("'", name, "' must be a number"));
  const double number = value->get<double>();
  if (!std::isfinite(number)) fail(name, cat("'", name, "' must be finite"));
  return static_cast<float>(number);
}

std::optional<int64_t> integer_field(const nlohmann::json& body, const char* name) {
  const nlohmann::json* value = field(body, name);
  if (value == nullptr) return std::nullopt;
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_number_float()) {
    const double number = value->get<double>();
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 9e15) {
      return static_cast<int64_t>(number);
    }
  }
  fail(name, cat("'", name, "' must be an integer"));
}

std::optional<bool> bool_field(const nlohmann::json& body, const char* name) {
  const nlohmann::json* value = field(body, name);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) fail(name, cat("'", name, "' must be a boolean"));
  return value->get<bool>();
}

int32_t token_id(const nlohmann::json& value, const char* param) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    fail(param, cat("'", param, "' token ids must be non-negative integers"));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

void parse_common(const nlohmann::json& body, const SamplingDefaults& defaults,
                  GenerationRequest& request) {
  if (!body.is_object()) fail("", "the request body must be a JSON object");
  const nlohmann::json* model = field(body, "model");
  if (model == nullptr) fail("model", "'model' is required");
  if (!model->is_string()) fail("model", "'model' must be a string");
  request.model = model->get<std::string>();

  SamplingParams& params = request.params;
  params.temperature = number_field(body, "temperature").value_or(defaults.temperature.value_or(1));
  params.top_p = number_field(body, "top_p").value_or(defaults.top_p.value_or(1));
  params.top_k =
      static_cast<int32_t>(integer_field(body, "top_k").value_or(defaults.top_k.value_or(0)));
  if (const auto seed = integer_field(body, "seed")) params.seed = static_cast<uint64_t>(*seed);
  // max_completion_tokens is the newer OpenAI name of max_tokens.
  std::optional<int64_t> max_tokens = integer_field(body, "max_completion_tokens");
  if (!max_tokens) max_tokens = integer_field(body, "max_tokens");
  if (max_tokens) {
    if (*max_tokens < 1)
      fail("max_tokens", cat("'max_tokens' must be at least 1, got ", *max_tokens));
    params.max_tokens = *max_tokens;
    request.max_tokens_given = true;
  }
  params.min_tokens = integer_field(body, "min_tokens").value_or(0);
  params.ignore_eos = bool_field(body, "ignore_eos").value_or(false);
  params.skip_special_tokens = bool_field(body, "skip_special_tokens").value_or(true);
  if (const nlohmann::json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      params.stop = {stop->get<std::string>()};
    } else if (stop->is_array()) {
      for (const nlohmann::json& item : *stop) {
        if (!item.is_string()) fail("stop", "'stop' must be a string or a list of strings");
        params.stop.push_back(item.get<std::string>());
      }
    } else {
      fail("stop", "'stop' must be a string or a list of strings");
    }
  }
  if (const nlohmann::json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) fail("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    for (const nlohmann::json& item : *ids)
      params.stop_token_ids.push_back(token_id(item, "stop_token_ids"));
  }
  const int64_t n = integer_field(body, "n").value_or(1);
  if (n < 1 || n > 128) fail("n", cat("'n' must be between 1 and 128, got ", n));
  request.n = static_cast<int32_t>(n);
  request.stream = bool_field(body, "stream").value_or(false);
  if (const nlohmann::json* options = field(body, "stream_options")) {
    if (!options->is_object()) fail("stream_options", "'stream_options' must be an object");
    if (!request.stream)
      fail("stream_options", "'stream_options' is only allowed with stream=true");
    request.include_usage = bool_field(*options, "include_usage").value_or(false);
  }
  request.return_token_ids = bool_field(body, "return_token_ids").value_or(false);
  if (field(body, "suffix") != nullptr) fail("suffix", "'suffix' is not supported by tidal");
  if (const nlohmann::json* bias = field(body, "logit_bias");
      bias != nullptr && !(bias->is_object() && bias->empty())) {
    fail("logit_bias", "'logit_bias' is not supported by tidal");
  }
  if (const auto best_of = integer_field(body, "best_of"); best_of && *best_of != n) {
    fail("best_of", "'best_of' other than n is not supported by tidal");
  }
  // The engine's own checks (ranges of temperature, top_p, top_k, ...) run here too, so the
  // error names the field before any work is queued.
  const Status status = params.validate(std::numeric_limits<int32_t>::max());
  if (!status.is_ok()) {
    const std::string& message = status.message();
    fail(message.substr(0, message.find(' ')), message);
  }
}

nlohmann::json parse_body(const std::string& text) {
  nlohmann::json body = nlohmann::json::parse(text, nullptr, false);
  if (body.is_discarded())
    throw ParseFailure{ApiError::bad_request("the request body is not valid JSON")};
  return body;
}

// Chat content: a string, or a list of {"type":"text","text":...} parts joined together.
std::string content_text(const nlohmann::json& content, size_t index) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    fail("messages", cat("messages[", index, "].content must be a string or a list of parts"));
  std::string text;
  for (const nlohmann::json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      fail("messages", cat("messages[", index, "].content: only text parts are supported"));
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace

ApiError ApiError::bad_request(std::string message, std::string param) {
  return {.status = 400,
          .type = "invalid_request_error",
          .message = std::move(message),
          .param = std::move(param),
          .code = ""};
}

nlohmann::json ApiError::body() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
            {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)}}}};
}

SamplingDefaults SamplingDefaults::from_model_dir(const std::string& directory) {
  SamplingDefaults defaults;
  std::ifstream in(directory + "/generation_config.json");
  if (!in) return defaults;
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
  if (!config.is_object()) TIDAL_FAIL(directory, "/generation_config.json: not a JSON object");
  if (config.value("do_sample", true) == false) {
    defaults.temperature = 0.0f;  // the model asks for greedy decoding
    return defaults;
  }
  if (config.contains("temperature") && config["temperature"].is_number()) {
    defaults.temperature = config["temperature"].get<float>();
  }
  if (config.contains("top_p") && config["top_p"].is_number())
    defaults.top_p = config["top_p"].get<float>();
  if (config.contains("top_k") && config["top_k"].is_number_integer()) {
    defaults.top_k = config["top_k"].get<int32_t>();
  }
  return defaults;
}

std::variant<CompletionRequest, ApiError> parse_completion_request(
    const std::string& text, const SamplingDefaults& defaults) {
  try {
    const nlohmann::json body = parse_body(text);
    CompletionRequest request;
    parse_common(body, defaults, request);
    if (!request.max_tokens_given) request.params.max_tokens = 16;  // OpenAI's default
    const nlohmann::json* prompt = field(body, "prompt");
    if (prompt == nullptr) fail("prompt", "'prompt' is required");
    if (prompt->is_string()) {
      request.prompts.emplace_back(prompt->get<std::string>());
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()) {
      std::vector<int32_t> ids;
      for (const nlohmann::json& item : *prompt) ids.push_back(token_id(item, "prompt"));
      request.prompts.emplace_back(std::move(ids));
    } else if (prompt->is_array() && !prompt->empty()) {
      for (const nlohmann::json& item : *prompt) {
        if (item.is_string()) {
          request.prompts.emplace_back(item.get<std::string>());
        } else if (item.is_array()) {
          std::vector<int32_t> ids;
          for (const nlohmann::json& id : item) ids.push_back(token_id(id, "prompt"));
          request.prompts.emplace_back(std::move(ids));
        } else {
          fail("prompt", "'prompt' must be a string, a list of strings, or token ids");
        }
      }
    } else {
      fail("prompt", "'prompt' must be a non-empty string, list of strings, or token ids");
    }
    if (const auto logprobs = integer_field(body, "logprobs")) {
      if (*logprobs < 0 || *logprobs > 20) fail("logprobs", "'logprobs' must be between 0 and 20");
      request.params.logprobs = static_cast<int32_t>(*logprobs);
    }
    if (bool_field(body, "echo").value_or(false)) fail("echo", "'echo' is not supported by tidal");
    return request;
  } catch (const ParseFailure& failure) {
    return failure.error;
  } catch (const nlohmann::json::exception& error) {
    // A field of an unexpected JSON type deep inside (e.g. a non-string "type" of a part).
    return ApiError::bad_request(cat("malformed request: ", error.what()));
  }
}

std::variant<ChatRequest, ApiError> parse_chat_request(const std::string& text,
                                                       const SamplingDefaults& defaults) {
  try {
    const nlohmann::json body = parse_body(text);
    ChatRequest request;
    parse_common(body, defaults, request);
    const nlohmann::json* messages = field(body, "messages");
    if (messages == nullptr) fail("messages", "'messages' is required");
    if (!messages->is_array() || messages->empty())
      fail("messages", "'messages' must be a non-empty list");
    request.messages = nlohmann::ordered_json::array();
    for (size_t i = 0; i < messages->size(); ++i) {
      const nlohmann::json& message = (*messages)[i];
      if (!message.is_object()) fail("messages", cat("messages[", i, "] must be an object"));
      const nlohmann::json* role = field(message, "role");
      if (role == nullptr || !role->is_string())
        fail("messages", cat("messages[", i, "].role must be a string"));
      static const std::vector<std::string> kRoles = {"system", "developer", "user", "assistant",
                                                      "tool"};
      if (std::find(kRoles.begin(), kRoles.end(), role->get<std::string>()) == kRoles.end()) {
        fail("messages", cat("messages[", i, "].role '", role->get<std::string>(),
                             "' is not one of system, developer, user, assistant, tool"));
      }
      nlohmann::ordered_json normalised = nlohmann::ordered_json::parse(message.dump());
      normalised["content"] = content_text(
          message.contains("content") ? message["content"] : nlohmann::json(nullptr), i);
      request.messages.push_back(std::move(normalised));
    }
    request.add_generation_prompt = bool_field(body, "add_generation_prompt").value_or(true);
    if (const nlohmann::json* tools = field(body, "tools")) {
      if (!tools->is_array()) fail("tools", "'tools' must be a list");
      request.template_kwargs["tools"] = nlohmann::ordered_json::parse(tools->dump());
    }
    if (const nlohmann::json* kwargs = field(body, "chat_template_kwargs")) {
      if (!kwargs->is_object())
        fail("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      for (const auto& [key, value] : kwargs->items()) {
        request.template_kwargs[key] = nlohmann::ordered_json::parse(value.dump());
      }
    }
    request.logprobs = bool_field(body, "logprobs").value_or(false);
    if (const auto top = integer_field(body, "top_logprobs")) {
      if (*top < 0 || *top > 20) fail("top_logprobs", "'top_logprobs' must be between 0 and 20");
      if (!request.logprobs) fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      request.params.logprobs = static_cast<int32_t>(*top);
    } else if (request.logprobs) {
      request.params.logprobs = 0;
    }
    return request;
  } catch (const ParseFailure& failure) {
    return failure.error;
  } catch (const nlohmann::json::exception& error) {
    // A field of an unexpected JSON type deep inside (e.g. a non-string "type" of a part).
    return ApiError::bad_request(cat("malformed request: ", error.what()));
  }
}

}  // namespace tidal
