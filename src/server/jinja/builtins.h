// The filters, tests and global functions templates can use, with Jinja's and transformers'
// semantics.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/jinja/ast.h"
#include "server/jinja/value.h"

namespace tidal::jinja {

// nullptr when there is no such filter or test; the parser rejects those up front, as Jinja does.
FilterFunction find_filter(std::string_view name);
TestFunction find_test(std::string_view name);

// range, dict, namespace, and transformers' raise_exception and strftime_now.
std::vector<std::pair<std::string, Value>> make_globals();

}  // namespace tidal::jinja
