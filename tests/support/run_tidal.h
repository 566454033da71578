// Test support: running the tidal binary with arguments and stdin, capturing exit code and output.
#pragma once

#include <string>

namespace tidal::testing_util {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `<build>/tidal <arguments>` through the shell with `input` on stdin.
CommandResult run_tidal(const std::string& arguments, const std::string& input = "");

}  // namespace tidal::testing_util
