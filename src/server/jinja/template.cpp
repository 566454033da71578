// A parsed Jinja template and its render entry point: the interpreter's public face.
#include "server/jinja/template.h"

#include "common/error.h"
#include "server/jinja/builtins.h"
#include "server/jinja/interpreter.h"
#include "server/jinja/parser.h"

namespace tidal::jinja {

struct Template::Parsed {
  std::string source;  // normalized, for quoting in errors
  Body body;
};

Template Template::parse(std::string_view source, const LexerOptions& options) {
  auto parsed = std::make_shared<Parsed>();
  parsed->source = normalize_newlines(source);
  parsed->body = jinja::parse(tokenize(parsed->source, options));
  return Template(std::move(parsed));
}

std::string Template::render(const std::vector<std::pair<std::string, Value>>& variables,
                             const RenderOptions& options) const {
  Interpreter interpreter(parsed_->source, options.limits, options.clock);
  auto globals = std::make_shared<Scope>(nullptr);
  for (auto& [name, value] : make_globals()) globals->set(name, std::move(value));
  auto context = std::make_shared<Scope>(globals);
  for (const auto& [name, value] : variables) context->set(name, value);
  // Template-level {% set %} lands in its own scope so the caller's variables stay intact.
  auto top = std::make_shared<Scope>(context);
  return interpreter.render(parsed_->body, top);
}

std::string Template::render(const nlohmann::ordered_json& variables,
                             const RenderOptions& options) const {
  if (!variables.is_object()) TIDAL_FAIL("template variables must be a JSON object");
  std::vector<std::pair<std::string, Value>> converted;
  for (const auto& [name, value] : variables.items())
    converted.emplace_back(name, Value::from_json(value));
  return render(converted, options);
}

}  // namespace tidal::jinja
