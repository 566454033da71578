// Renders a model's chat template (tokenizer_config.json) into a prompt, matching transformers'
// apply_chat_template(..., tokenize=False) byte for byte.
#include "server/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "server/jinja/template.h"

namespace tidal {
namespace {

using Json = nlohmann::ordered_json;

// The names transformers offers a message's reasoning under; the first is the standard one.
constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) TIDAL_FAIL("cannot read ", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<std::string> special_token(const Json& config, const char* name,
                                         const std::string& file) {
  const auto it = config.find(name);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  TIDAL_FAIL(file, ": ", name, " must be a string, {\"content\": ...} or null");
}

struct TemplateSources {
  std::string default_source;
  std::optional<std::string> tool_use_source;
};

TemplateSources templates_from_config(const Json& config, const std::string& file) {
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) TIDAL_FAIL(file, ": no chat_template");
  if (it->is_string()) return {it->get<std::string>(), std::nullopt};
  if (!it->is_array()) {
    TIDAL_FAIL(file, ": chat_template must be a string or a list of {\"name\", \"template\"}");
  }
  std::optional<std::string> default_source;
  std::optional<std::string> tool_use_source;
  for (const Json& entry : *it) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("template") || !entry["template"].is_string()) {
      TIDAL_FAIL(file, ": chat_template entries must be {\"name\": string, \"template\": string}");
    }
    const std::string name = entry["name"].get<std::string>();
    if (name == "default") default_source = entry["template"].get<std::string>();
    if (name == "tool_use") tool_use_source = entry["template"].get<std::string>();
  }
  if (!default_source) {
    TIDAL_FAIL(file, ": chat_template lists several templates but none is named \"default\"");
  }
  return {*default_source, tool_use_source};
}

// transformers drops null-valued keys (APIs send content=None or tool_calls=None, which templates
// would render as "None"), then offers reasoning under every name templates read it by.
Json prepare_message(const Json& message) {
  if (!message.is_object()) {
    TIDAL_FAIL("chat messages must be objects, got ", message.type_name());
  }
  Json cleaned = Json::object();
  for (const auto& [key, value] : message.items()) {
    if (!value.is_null()) cleaned[key] = value;
  }
  const Json* reasoning = nullptr;
  for (const char* field : kReasoningFields) {
    if (cleaned.contains(field)) {
      reasoning = &cleaned[field];
      break;
    }
  }
  if (reasoning == nullptr) return cleaned;
  // Python's {"thinking": r, **message, "reasoning_content": r}: a message's own "thinking" wins,
  // and key order matters to templates that print whole messages.
  Json aliased = Json::object();
  aliased["thinking"] = *reasoning;
  for (const auto& [key, value] : cleaned.items()) aliased[key] = value;
  aliased["reasoning_content"] = *reasoning;
  return aliased;
}

void require_list_of_objects(const Json& value, const char* name) {
  if (value.is_null()) return;
  if (!value.is_array()) TIDAL_FAIL(name, " must be a list, got ", value.type_name());
  for (const Json& item : value) {
    if (!item.is_object()) TIDAL_FAIL(name, " must be a list of objects, got a ", item.type_name());
  }
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source,
                           const std::optional<std::string>& tool_use_source,
                           std::optional<std::string> bos_token,
                           std::optional<std::string> eos_token)
    : source_(source),
      template_(std::make_shared<const jinja::Template>(jinja::Template::parse(source))),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)) {
  if (tool_use_source) {
    tool_use_template_ =
        std::make_shared<const jinja::Template>(jinja::Template::parse(*tool_use_source));
  }
}

ChatTemplate ChatTemplate::from_model_dir(const std::string& directory,
                                          const std::string& template_file) {
  const std::filesystem::path dir(directory);
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  const std::filesystem::path jinja_path =
      template_file.empty() ? dir / "chat_template.jinja" : std::filesystem::path(template_file);
  if (!template_file.empty() && !std::filesystem::is_regular_file(jinja_path))
    TIDAL_FAIL("--chat-template ", template_file, ": no such file");
  Json config = Json::object();
  if (std::filesystem::exists(config_path)) {
    try {
      config = Json::parse(read_file(config_path));
    } catch (const Json::exception& error) {
      TIDAL_FAIL(config_path.string(), ": invalid JSON: ", error.what());
    }
  } else if (!std::filesystem::exists(jinja_path)) {
    TIDAL_FAIL(config_path.string(), ": not found, and there is no ", jinja_path.string());
  }
  const bool from_jinja_file = std::filesystem::exists(jinja_path);
  const std::string file = from_jinja_file ? jinja_path.string() : config_path.string();
  const TemplateSources sources = from_jinja_file
                                      ? TemplateSources{read_file(jinja_path), std::nullopt}
                                      : templates_from_config(config, file);
  try {
    return ChatTemplate(sources.default_source, sources.tool_use_source,
                        special_token(config, "bos_token", config_path.string()),
                        special_token(config, "eos_token", config_path.string()));
  } catch (const Error& error) {
    TIDAL_FAIL(file, ": chat template: ", error.what());
  }
}

ChatTemplate ChatTemplate::from_source(const std::string& source, std::string bos_token,
                                       std::string eos_token) {
  std::optional<std::string> bos;
  std::optional<std::string> eos;
  if (!bos_token.empty()) bos = std::move(bos_token);
  if (!eos_token.empty()) eos = std::move(eos_token);
  return ChatTemplate(source, std::nullopt, std::move(bos), std::move(eos));
}

ChatTemplate ChatTemplate::with_source(const std::string& source) const {
  ChatTemplate other(source, std::nullopt, bos_token_, eos_token_);
  other.clock_ = clock_;
  return other;
}

std::string ChatTemplate::render(const Json& messages, bool add_generation_prompt,
                                 const Json& extra) const {
  if (!messages.is_array()) TIDAL_FAIL("messages must be a list, got ", messages.type_name());
  if (!extra.is_object()) TIDAL_FAIL("extra template variables must be an object");
  for (const char* reserved : {"messages", "add_generation_prompt"}) {
    if (extra.contains(reserved))
      TIDAL_FAIL("'", reserved, "' cannot be passed as an extra variable");
  }
  Json chat = Json::array();
  for (const Json& message : messages) chat.push_back(prepare_message(message));

  // The same variables, in the same precedence, as transformers: special tokens, overridden by
  // the caller's extras; tools and documents always defined (None when not given).
  std::vector<std::pair<std::string, jinja::Value>> variables;
  auto set = [&](const std::string& name, jinja::Value value) {
    for (auto& [existing, current] : variables) {
      if (existing == name) {
        current = std::move(value);
        return;
      }
    }
    variables.emplace_back(name, std::move(value));
  };
  if (bos_token_) set("bos_token", jinja::Value::from_string(*bos_token_));
  if (eos_token_) set("eos_token", jinja::Value::from_string(*eos_token_));
  set("tools", jinja::Value::none());
  set("documents", jinja::Value::none());
  for (const auto& [name, value] : extra.items()) {
    if (name == "tools" || name == "documents") require_list_of_objects(value, name.c_str());
    set(name, jinja::Value::from_json(value));
  }
  set("messages", jinja::Value::from_json(chat));
  set("add_generation_prompt", jinja::Value::from_bool(add_generation_prompt));

  jinja::RenderOptions options;
  options.clock = clock_;
  const bool has_tools = extra.contains("tools") && !extra["tools"].is_null();
  const auto& chosen = has_tools && tool_use_template_ ? tool_use_template_ : template_;
  return chosen->render(variables, options);
}

}  // namespace tidal
