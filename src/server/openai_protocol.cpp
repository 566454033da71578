// Parsing and validation of OpenAI completion and chat requests.
#include "server/openai_protocol.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>

#include "common/error.h"
#include "server/request_json.h"

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
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(name, cat("'", name, "' is too large: ", value->get<uint64_t>()));
  }
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_number_float()) {
    const double number = value->get<double>();
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 9e15) {
      return static_cast<int64_t>(number);
    }
  }
  fail(name, cat("'", name, "' must be an integer"));
}

// An integer field that must lie in [low, high]; the message says the range.
std::optional<int64_t> bounded_field(const nlohmann::json& body, const char* name, int64_t low,
                                     int64_t high) {
  const std::optional<int64_t> value = integer_field(body, name);
  if (value && (*value < low || *value > high)) {
    fail(name, high == std::numeric_limits<int64_t>::max()
                   ? cat("'", name, "' must be at least ", low, ", got ", *value)
                   : cat("'", name, "' must be between ", low, " and ", high, ", got ", *value));
  }
  return value;
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

using Json = nlohmann::json;

// Whether a field's value is neutral, given the whole body. A null value counts as absent and is
// never asked about.
using NeutralTest = bool (*)(const Json& value, const Json& body);

bool only_null(const Json&, const Json&) {
  return false;
}
bool is_false(const Json& value, const Json&) {
  return value == false;
}
bool is_empty(const Json& value, const Json&) {
  return value.is_structured() && value.empty();
}
// "auto" parses the answer's calls (with --tool-call-parser) and "none" leaves it text; both need
// nothing more of decoding. "required" and a named function do (constrained decoding).
bool is_none_or_auto(const Json& value, const Json&) {
  return value == "none" || value == "auto";
}
bool is_text_modality(const Json& value, const Json&) {
  return value == Json::array({"text"});
}
bool is_empty_string(const Json& value, const Json&) {
  return value == "";
}
bool allows_parallel_calls(const Json& value, const Json& body) {
  const Json* tools = field(body, "tools");
  return value == true || (value == false && (tools == nullptr || is_empty(*tools, body)));
}

// Fields of the OpenAI API (and vLLM's extensions of it) that tidal does not implement. Clients
// and harnesses send some of them with their neutral value, which changes nothing and is
// accepted; any other value would be silently ignored, so it is refused by name instead.
struct Unimplemented {
  const char* name;
  const char* neutral;  // what is accepted, for the message
  NeutralTest is_neutral;
};

constexpr Unimplemented kUnimplemented[] = {
    {"tool_choice", R"("none" or "auto")", is_none_or_auto},
    {"parallel_tool_calls", "true, or false without tools", allows_parallel_calls},
    {"functions", "[]", is_empty},
    {"function_call", R"("none" or "auto")", is_none_or_auto},
    {"suffix", R"("")", is_empty_string},
    {"modalities", R"(["text"])", is_text_modality},
    {"audio", "null", only_null},
    {"prediction", "null", only_null},
    // vLLM's extensions that change what is generated.
    {"use_beam_search", "false", is_false},
    {"include_stop_str_in_output", "false", is_false},
    {"truncate_prompt_tokens", "null", only_null},
};

void refuse_unimplemented(const nlohmann::json& body) {
  for (const Unimplemented& entry : kUnimplemented) {
    const nlohmann::json* value = field(body, entry.name);
    if (value != nullptr && !entry.is_neutral(*value, body)) {
      fail(entry.name, cat("tidal does not implement '", entry.name, "' yet; only ", entry.neutral,
                           " is accepted"));
    }
  }
}

// One way of asking for structured output, as `field` gives it: a JSON schema (an object, or
// its text), or a string (regex, EBNF), or a list of strings (choices).
StructuredOutput structured_output_of(StructuredOutput::Kind kind, const Json& value,
                                      const std::string& field_name) {
  using Kind = StructuredOutput::Kind;
  StructuredOutput output{.kind = kind, .spec = {}, .field = field_name};
  switch (kind) {
    case Kind::kJsonSchema:
      if (value.is_string()) {
        const Json parsed = Json::parse(value.get<std::string>(), nullptr, false);
        if (!parsed.is_object()) fail(field_name, cat("'", field_name, "' is not a JSON schema"));
        output.spec = parsed.dump();
      } else if (value.is_object() || value.is_boolean()) {
        output.spec = value.dump();
      } else {
        fail(field_name, cat("'", field_name, "' must be a JSON schema"));
      }
      break;
    case Kind::kRegex:
    case Kind::kGrammar:
      if (!value.is_string() || value.get_ref<const std::string&>().empty())
        fail(field_name, cat("'", field_name, "' must be a non-empty string"));
      output.spec = value.get<std::string>();
      break;
    case Kind::kChoice:
      if (!value.is_array() || value.empty() ||
          !std::all_of(value.begin(), value.end(), [](const Json& item) {
            return item.is_string() && !item.get_ref<const std::string&>().empty();
          })) {
        fail(field_name, cat("'", field_name, "' must be a non-empty list of non-empty strings"));
      }
      output.spec = value.dump();
      break;
    case Kind::kJsonObject:
    case Kind::kNone:
      break;
  }
  return output;
}

// Structured output: OpenAI's response_format, vLLM's guided_json/_regex/_choice/_grammar and
// its newer structured_outputs; one of them per request.
StructuredOutput parse_structured_output(const Json& body) {
  using Kind = StructuredOutput::Kind;
  std::vector<StructuredOutput> asked;
  if (const Json* format = field(body, "response_format")) {
    const Json* type = format->is_object() ? field(*format, "type") : nullptr;
    if (type == nullptr || !type->is_string())
      fail("response_format", "'response_format' must be an object with a 'type'");
    if (*type == "json_object") {
      asked.push_back({.kind = Kind::kJsonObject, .spec = {}, .field = "response_format"});
    } else if (*type == "json_schema") {
      const Json* wrapper = field(*format, "json_schema");
      const Json* schema =
          wrapper != nullptr && wrapper->is_object() ? field(*wrapper, "schema") : nullptr;
      if (schema == nullptr) {
        fail("response_format",
             "'response_format' of type json_schema needs json_schema.schema (the schema)");
      }
      asked.push_back(structured_output_of(Kind::kJsonSchema, *schema, "response_format"));
    } else if (*type != "text") {
      fail("response_format", "'response_format' type must be text, json_object or json_schema");
    }
  }
  const std::pair<const char*, Kind> guided[] = {{"guided_json", Kind::kJsonSchema},
                                                 {"guided_regex", Kind::kRegex},
                                                 {"guided_choice", Kind::kChoice},
                                                 {"guided_grammar", Kind::kGrammar}};
  for (const auto& [name, kind] : guided) {
    if (const Json* value = field(body, name))
      asked.push_back(structured_output_of(kind, *value, name));
  }
  if (const Json* outputs = field(body, "structured_outputs")) {
    if (!outputs->is_object()) fail("structured_outputs", "'structured_outputs' must be an object");
    const std::pair<const char*, Kind> keys[] = {{"json", Kind::kJsonSchema},
                                                 {"regex", Kind::kRegex},
                                                 {"choice", Kind::kChoice},
                                                 {"grammar", Kind::kGrammar}};
    for (const auto& [key, value] : outputs->items()) {
      if (value.is_null()) continue;
      const auto* known = std::end(keys);
      for (const auto& entry : keys) {
        if (key == entry.first) known = &entry;
      }
      if (known != std::end(keys)) {
        asked.push_back(structured_output_of(known->second, value, "structured_outputs"));
      } else if (key == "json_object" && value == true) {
        asked.push_back({.kind = Kind::kJsonObject, .spec = {}, .field = "structured_outputs"});
      } else if (key != "json_object") {
        fail("structured_outputs",
             cat("'structured_outputs' has '", key,
                 "'; tidal reads json, regex, choice, grammar and json_object"));
      }
    }
  }
  if (asked.size() > 1) {
    fail(asked[1].field, cat("'", asked[0].field, "' and '", asked[1].field,
                             "' both constrain the output; give one"));
  }
  return asked.empty() ? StructuredOutput{} : asked.front();
}

// The schema `output` came from, as the client wrote it: an object's properties are generated
// in the schema's order (as vLLM does), which the key-sorted body has lost. Only the field that
// holds it is parsed again.
std::string schema_in_client_order(std::string_view text, const StructuredOutput& output) {
  const std::string& name = output.field;
  const nlohmann::ordered_json::parser_callback_t only_that_field =
      [&name](int depth, nlohmann::ordered_json::parse_event_t event,
              nlohmann::ordered_json& parsed) {
        return depth != 1 || event != nlohmann::ordered_json::parse_event_t::key || parsed == name;
      };
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(text, only_that_field);
  const nlohmann::ordered_json& holder = ordered.at(name);
  const nlohmann::ordered_json& schema = name == "response_format"
                                             ? holder.at("json_schema").at("schema")
                                         : name == "structured_outputs" ? holder.at("json")
                                                                        : holder;
  return schema.is_string() ? nlohmann::ordered_json::parse(schema.get<std::string>()).dump()
                            : schema.dump();
}

// default_max_tokens: what an absent max_tokens means for this endpoint.
void parse_common(const nlohmann::json& body, std::string_view text,
                  const SamplingDefaults& defaults, const RequestLimits& limits,
                  int64_t default_max_tokens, GenerationRequest& request) {
  const nlohmann::json* model = field(body, "model");
  if (model == nullptr) fail("model", "'model' is required");
  if (!model->is_string()) fail("model", "'model' must be a string");
  request.model = model->get<std::string>();
  refuse_unimplemented(body);

  SamplingParams& params = request.params;
  params.temperature = number_field(body, "temperature").value_or(defaults.temperature.value_or(1));
  params.top_p = number_field(body, "top_p").value_or(defaults.top_p.value_or(1));
  params.top_k =
      static_cast<int32_t>(bounded_field(body, "top_k", -1, std::numeric_limits<int32_t>::max())
                               .value_or(defaults.top_k.value_or(0)));
  // A seed is any 64-bit pattern: take the unsigned ones above int64 as they are.
  if (const nlohmann::json* seed = field(body, "seed");
      seed != nullptr && seed->is_number_unsigned())
    params.seed = seed->get<uint64_t>();
  else if (const auto signed_seed = integer_field(body, "seed"))
    params.seed = static_cast<uint64_t>(*signed_seed);
  // max_completion_tokens is the newer OpenAI name of max_tokens. Its bound, the context length,
  // is checked by Generation::start against the prompt.
  const char* max_tokens_name =
      field(body, "max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens";
  request.max_tokens_given = field(body, max_tokens_name) != nullptr;
  request.max_tokens_field = max_tokens_name;
  params.max_tokens = bounded_field(body, max_tokens_name, 1, std::numeric_limits<int64_t>::max())
                          .value_or(default_max_tokens);
  params.min_tokens =
      bounded_field(body, "min_tokens", 0, std::numeric_limits<int64_t>::max()).value_or(0);
  params.ignore_eos = bool_field(body, "ignore_eos").value_or(false);
  params.skip_special_tokens = bool_field(body, "skip_special_tokens").value_or(true);
  if (const nlohmann::json* stop = field(body, "stop")) {
    auto add_stop = [&](const nlohmann::json& item) {
      if (!item.is_string()) fail("stop", "'stop' must be a string or a list of strings");
      const auto& stop_text = item.get_ref<const std::string&>();
      if (stop_text.size() > static_cast<size_t>(limits.max_stop_bytes)) {
        fail("stop", cat("'stop' strings may be ", limits.max_stop_bytes,
                         " bytes long at most; one is ", stop_text.size()));
      }
      params.stop.push_back(stop_text);
    };
    if (stop->is_array()) {
      if (stop->size() > static_cast<size_t>(limits.max_stop)) {
        fail("stop", cat("'stop' holds ", stop->size(), " strings; at most ", limits.max_stop,
                         " are allowed"));
      }
      for (const nlohmann::json& item : *stop) add_stop(item);
    } else {
      add_stop(*stop);
    }
  }
  if (const nlohmann::json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) fail("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    const size_t max_ids =
        std::min(static_cast<size_t>(std::max(limits.max_stop_token_ids, 0)), kMaxStopTokenIds);
    if (ids->size() > max_ids) {
      fail("stop_token_ids",
           cat("'stop_token_ids' holds ", ids->size(), " ids; at most ", max_ids, " are allowed"));
    }
    for (const nlohmann::json& item : *ids)
      params.stop_token_ids.push_back(token_id(item, "stop_token_ids"));
  }
  params.presence_penalty = number_field(body, "presence_penalty").value_or(0.0f);
  params.frequency_penalty = number_field(body, "frequency_penalty").value_or(0.0f);
  params.repetition_penalty = number_field(body, "repetition_penalty").value_or(1.0f);
  params.min_p = number_field(body, "min_p").value_or(0.0f);
  if (const nlohmann::json* bias = field(body, "logit_bias")) {
    if (!bias->is_object())
      fail("logit_bias", "'logit_bias' must be an object of token ids to numbers");
    std::map<int32_t, float> by_id;
    for (const auto& [key, value] : bias->items()) {
      int32_t id = -1;
      const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (error != std::errc() || end != key.data() + key.size() || id < 0)
        fail("logit_bias", cat("'logit_bias' keys must be token ids; '", key, "' is not"));
      if (!value.is_number()) fail("logit_bias", "'logit_bias' values must be numbers");
      // OpenAI's range: past it a bias only bans or forces, which -100 and 100 already do.
      by_id[id] = std::clamp(value.get<float>(), -100.0f, 100.0f);
    }
    params.logit_bias.assign(by_id.begin(), by_id.end());
  }
  if (const nlohmann::json* allowed = field(body, "allowed_token_ids")) {
    if (!allowed->is_array() || allowed->empty())
      fail("allowed_token_ids", "'allowed_token_ids' must be a non-empty list of token ids");
    for (const nlohmann::json& item : *allowed)
      params.allowed_token_ids.push_back(token_id(item, "allowed_token_ids"));
  }
  if (const nlohmann::json* words = field(body, "bad_words")) {
    if (!words->is_array()) fail("bad_words", "'bad_words' must be a list of strings");
    for (const nlohmann::json& item : *words) {
      if (!item.is_string() || item.get_ref<const std::string&>().empty())
        fail("bad_words", "'bad_words' must be a list of non-empty strings");
      request.bad_words.push_back(item.get<std::string>());
    }
  }
  params.structured_output = parse_structured_output(body);
  if (params.structured_output.kind == StructuredOutput::Kind::kJsonSchema) {
    params.structured_output.spec = schema_in_client_order(text, params.structured_output);
  }
  if (const auto prompt_logprobs = bounded_field(body, "prompt_logprobs", 0, limits.max_logprobs)) {
    params.prompt_logprobs = static_cast<int32_t>(*prompt_logprobs);
    request.show_prompt_logprobs = true;
  }
  request.n = static_cast<int32_t>(bounded_field(body, "n", 1, limits.max_choices).value_or(1));
  request.stream = bool_field(body, "stream").value_or(false);
  if (const nlohmann::json* options = field(body, "stream_options")) {
    if (!options->is_object()) fail("stream_options", "'stream_options' must be an object");
    if (!request.stream)
      fail("stream_options", "'stream_options' is only allowed with stream=true");
    request.include_usage = bool_field(*options, "include_usage").value_or(false);
  }
  request.return_token_ids = bool_field(body, "return_token_ids").value_or(false);
  if (const auto best_of = integer_field(body, "best_of"); best_of && *best_of != request.n) {
    fail("best_of", cat("tidal does not implement 'best_of' yet; only best_of = n (", request.n,
                        ") is accepted"));
  }
  // The engine's own checks (ranges of temperature, top_p, top_k, ...) run here too, so the
  // error names the field before any work is queued.
  const Status status = params.validate(std::numeric_limits<int32_t>::max());
  if (!status.is_ok()) {
    const std::string& message = status.message();
    fail(message.substr(0, message.find(' ')), message);
  }
}

// The body as a JSON object (every endpoint's body is one).
nlohmann::json parse_body(std::string_view text, const RequestLimits& limits) {
  std::variant<nlohmann::json, ApiError> body = parse_request_json(text, limits.max_json_depth);
  if (auto* error = std::get_if<ApiError>(&body)) throw ParseFailure{std::move(*error)};
  if (!std::get<nlohmann::json>(body).is_object())
    fail("", "the request body must be a JSON object");
  return std::move(std::get<nlohmann::json>(body));
}

// Runs one endpoint's parser, turning its failures into the 400 the client gets.
template <typename Parse>
auto guarded(Parse&& parse) -> std::variant<decltype(parse()), ApiError> {
  try {
    return parse();
  } catch (const ParseFailure& failure) {
    return failure.error;
  } catch (const nlohmann::json::exception& error) {
    // A field of an unexpected JSON type deep inside (e.g. a non-string "type" of a part).
    return ApiError::bad_request(cat("malformed request: ", error.what()));
  }
}

// /tokenize's and /detokenize's optional "model", checked against the served name by the caller.
std::optional<std::string> optional_model(const nlohmann::json& body) {
  const nlohmann::json* model = field(body, "model");
  if (model == nullptr) return std::nullopt;
  if (!model->is_string()) fail("model", "'model' must be a string");
  return model->get<std::string>();
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

// messages, add_generation_prompt, tools, chat_template_kwargs and chat_template. What reaches the
// template keeps the client's key order (`text` parsed again, into ordered_json): templates dump
// tools and arguments with tojson, and transformers keeps the order the client wrote.
void parse_chat_inputs(const nlohmann::json& body, std::string_view text, ChatInputs& inputs) {
  // Only the fields that reach the template are kept (an ordered object's keys are found one by
  // one, so a huge unrelated object must not be built again here).
  const nlohmann::ordered_json::parser_callback_t keep_template_inputs =
      [](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
        if (depth != 1 || event != nlohmann::ordered_json::parse_event_t::key) return true;
        return parsed == "messages" || parsed == "tools" || parsed == "chat_template_kwargs";
      };
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(text, keep_template_inputs);
  const nlohmann::json* messages = field(body, "messages");
  if (messages == nullptr) fail("messages", "'messages' is required");
  if (!messages->is_array() || messages->empty())
    fail("messages", "'messages' must be a non-empty list");
  inputs.messages = nlohmann::ordered_json::array();
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
    nlohmann::ordered_json normalised = ordered.at("messages").at(i);
    normalised["content"] =
        content_text(message.contains("content") ? message["content"] : nlohmann::json(nullptr), i);
    inputs.messages.push_back(std::move(normalised));
  }
  inputs.add_generation_prompt = bool_field(body, "add_generation_prompt").value_or(true);
  if (const nlohmann::json* tools = field(body, "tools")) {
    if (!tools->is_array()) fail("tools", "'tools' must be a list");
    // An empty list is no tools: it must not pick a template's tool_use variant.
    if (!tools->empty()) inputs.template_kwargs["tools"] = ordered.at("tools");
  }
  if (const nlohmann::json* kwargs = field(body, "chat_template_kwargs")) {
    if (!kwargs->is_object())
      fail("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    for (const auto& [key, value] : ordered.at("chat_template_kwargs").items()) {
      inputs.template_kwargs[key] = value;
    }
  }
  if (const nlohmann::json* source = field(body, "chat_template")) {
    if (!source->is_string()) fail("chat_template", "'chat_template' must be a string");
    inputs.chat_template = source->get<std::string>();
  }
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

std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view text,
                                                                   const SamplingDefaults& defaults,
                                                                   const RequestLimits& limits) {
  return guarded([&] {
    const nlohmann::json body = parse_body(text, limits);
    CompletionRequest request;
    parse_common(body, text, defaults, limits, /*default_max_tokens=*/16,
                 request);  // OpenAI's default
    request.add_special_tokens = bool_field(body, "add_special_tokens").value_or(true);
    const nlohmann::json* prompt = field(body, "prompt");
    if (prompt == nullptr) fail("prompt", "'prompt' is required");
    // Each prompt of a list runs n choices: bound them before any is tokenized.
    if (prompt->is_array() && !prompt->empty() && !(*prompt)[0].is_number() &&
        prompt->size() * static_cast<size_t>(request.n) > static_cast<size_t>(limits.max_choices)) {
      fail(prompt->size() > static_cast<size_t>(limits.max_choices) ? "prompt" : "n",
           cat("a request may run ", limits.max_choices, " choices at most; ", prompt->size(),
               " prompts x n = ", request.n, " make ", prompt->size() * request.n));
    }
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
    if (const auto logprobs = bounded_field(body, "logprobs", 0, limits.max_logprobs))
      request.params.logprobs = static_cast<int32_t>(*logprobs);
    request.echo = bool_field(body, "echo").value_or(false);
    if (request.echo && request.params.logprobs) {
      // The echoed prompt's tokens get their logprobs too (the first has none).
      request.params.prompt_logprobs =
          std::max(request.params.prompt_logprobs.value_or(0), *request.params.logprobs);
    }
    return request;
  });
}

std::variant<ChatRequest, ApiError> parse_chat_request(std::string_view text,
                                                       const SamplingDefaults& defaults,
                                                       const RequestLimits& limits) {
  return guarded([&] {
    const nlohmann::json body = parse_body(text, limits);
    ChatRequest request;
    // Chat without max_tokens runs to EOS or the end of the context (OpenAI, vLLM):
    // Generation::start bounds it by what the prompt leaves.
    parse_common(body, text, defaults, limits, std::numeric_limits<int64_t>::max(), request);
    // The template writes the special tokens itself (vLLM's default for chat).
    request.add_special_tokens = bool_field(body, "add_special_tokens").value_or(false);
    // vLLM's chat echo (the last message's content first) is not built: refused, never ignored.
    if (bool_field(body, "echo").value_or(false))
      fail("echo", "tidal does not implement 'echo' for chat yet; only false is accepted");
    parse_chat_inputs(body, text, request);
    if (request.template_kwargs.contains("tools")) {
      const nlohmann::json* choice = field(body, "tool_choice");
      request.tool_choice = choice != nullptr ? choice->get<std::string>() : "auto";
    }
    request.logprobs = bool_field(body, "logprobs").value_or(false);
    if (const auto top = bounded_field(body, "top_logprobs", 0, limits.max_logprobs)) {
      if (!request.logprobs) fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      request.params.logprobs = static_cast<int32_t>(*top);
    } else if (request.logprobs) {
      request.params.logprobs = 0;
    }
    return request;
  });
}

std::variant<TokenizeRequest, ApiError> parse_tokenize_request(std::string_view text,
                                                               const RequestLimits& limits) {
  return guarded([&] {
    const nlohmann::json body = parse_body(text, limits);
    TokenizeRequest request;
    request.model = optional_model(body);
    const nlohmann::json* prompt = field(body, "prompt");
    const bool has_messages = field(body, "messages") != nullptr;
    if ((prompt != nullptr) == has_messages)
      fail(has_messages ? "prompt" : "messages", "give either 'prompt' or 'messages'");
    if (prompt != nullptr) {
      if (!prompt->is_string()) fail("prompt", "'prompt' must be a string");
      request.prompt = prompt->get<std::string>();
    } else {
      request.chat.emplace();
      parse_chat_inputs(body, text, *request.chat);
    }
    request.add_special_tokens =
        bool_field(body, "add_special_tokens").value_or(!request.chat.has_value());
    request.return_token_strs = bool_field(body, "return_token_strs").value_or(false);
    return request;
  });
}

std::variant<DetokenizeRequest, ApiError> parse_detokenize_request(std::string_view text,
                                                                   const RequestLimits& limits) {
  return guarded([&] {
    const nlohmann::json body = parse_body(text, limits);
    DetokenizeRequest request;
    request.model = optional_model(body);
    const nlohmann::json* tokens = field(body, "tokens");
    if (tokens == nullptr || !tokens->is_array())
      fail("tokens", "'tokens' must be a list of token ids");
    for (const nlohmann::json& item : *tokens) request.tokens.push_back(token_id(item, "tokens"));
    return request;
  });
}

}  // namespace tidal
