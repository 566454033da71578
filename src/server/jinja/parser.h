// Builds the syntax tree from tokens, following Jinja's grammar and operator precedence.
#pragma once

#include <string_view>
#include <vector>

#include "server/jinja/ast.h"
#include "server/jinja/lexer.h"

namespace tidal::jinja {

// Throws tidal::Error naming the construct and its line and column: unsupported tags
// (include, extends, call, ...), unknown filters and tests, unterminated blocks.
Body parse(const std::vector<Token>& tokens);

}  // namespace tidal::jinja
