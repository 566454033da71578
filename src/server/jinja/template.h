// A parsed Jinja template and its render entry point: the interpreter's public face.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/jinja/ast.h"
#include "server/jinja/lexer.h"
#include "server/jinja/runtime.h"
#include "server/jinja/value.h"

namespace tidal::jinja {

struct RenderOptions {
  RenderLimits limits;
  // Seconds since the epoch for strftime_now; the system clock when empty.
  std::function<std::time_t()> clock;
};

class Template {
 public:
  // Throws tidal::Error naming the line, column and construct that does not parse.
  static Template parse(std::string_view source, const LexerOptions& options = {});

  // `variables` are visible by name, over the globals (range, namespace, raise_exception, ...).
  // Throws tidal::Error naming the failing expression; raise_exception's message comes through
  // unchanged.
  std::string render(const std::vector<std::pair<std::string, Value>>& variables,
                     const RenderOptions& options = {}) const;
  // Each member of the JSON object becomes a variable.
  std::string render(const nlohmann::ordered_json& variables,
                     const RenderOptions& options = {}) const;

 private:
  struct Parsed;
  explicit Template(std::shared_ptr<const Parsed> parsed) : parsed_(std::move(parsed)) {}
  std::shared_ptr<const Parsed> parsed_;
};

}  // namespace tidal::jinja
