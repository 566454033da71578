// Shared helpers for the Jinja interpreter tests: render a template string with JSON variables.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "server/jinja/template.h"

namespace tidal::jinja::testing {

inline std::string render(
    const std::string& source,
    const nlohmann::ordered_json& variables = nlohmann::ordered_json::object(),
    const RenderOptions& options = {}) {
  return Template::parse(source).render(variables, options);
}

}  // namespace tidal::jinja::testing
