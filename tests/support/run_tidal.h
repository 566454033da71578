// Test support: running the tidal binary with arguments and stdin, capturing exit code and output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tidal::testing_util {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `<build>/tidal <arguments>` through the shell with `input` on stdin.
CommandResult run_tidal(const std::string& arguments, const std::string& input = "");

// Token ids as `--prompt-token-ids` takes them: "1,2,3".
std::string join_ids(const std::vector<int32_t>& ids);

}  // namespace tidal::testing_util
