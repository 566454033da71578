// Renders a model's chat template (tokenizer_config.json) into a prompt, matching transformers'
// apply_chat_template(..., tokenize=False) byte for byte.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace tidal {

namespace jinja {
class Template;
}

class ChatTemplate {
 public:
  // Reads the template from <dir>/chat_template.jinja when present (transformers gives it
  // priority), else from <dir>/tokenizer_config.json's chat_template: a string, or a list of
  // {"name", "template"} of which "default" is used, and "tool_use" (when there is one) for
  // requests that pass tools, as transformers picks them. bos_token and eos_token come from
  // tokenizer_config.json (a string, {"content": ...} or null). Throws tidal::Error naming the file
  // when there is no template or it does not parse (the message names the unsupported construct
  // and its line).
  // `template_file` (--chat-template), when given, replaces the model's template: it is read whole
  // as the template (no tool_use variant), and the model need not have one of its own.
  static ChatTemplate from_model_dir(const std::string& directory,
                                     const std::string& template_file = "");
  // An empty token is left undefined in the template, as transformers does for a null one.
  static ChatTemplate from_source(const std::string& source, std::string bos_token,
                                  std::string eos_token);

  // The same special tokens with another template (a request's chat_template). Throws
  // tidal::Error naming the construct when the source does not parse.
  ChatTemplate with_source(const std::string& source) const;

  // messages: the OpenAI-style list ({"role","content",...}); extra: more template variables
  // (tools, documents, enable_thinking, ...). Like transformers, message keys whose value is null
  // are dropped, and reasoning given as reasoning_content, thinking or reasoning is offered under
  // all of those names. Throws tidal::Error (e.g. from raise_exception) with the template's
  // message.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  // Fixes the time strftime_now sees, for reproducible tests.
  void set_clock(std::function<std::time_t()> clock) { clock_ = std::move(clock); }
  const std::string& source() const { return source_; }

 private:
  ChatTemplate(const std::string& source, const std::optional<std::string>& tool_use_source,
               std::optional<std::string> bos_token, std::optional<std::string> eos_token);

  std::string source_;
  std::shared_ptr<const jinja::Template> template_;
  std::shared_ptr<const jinja::Template> tool_use_template_;  // may be null
  std::optional<std::string> bos_token_;
  std::optional<std::string> eos_token_;
  std::function<std::time_t()> clock_;
};

}  // namespace tidal
