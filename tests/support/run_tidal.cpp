// Test support: the tidal binary run as a child process, through files for its three streams.
#include "support/run_tidal.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tidal::testing_util {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

CommandResult run_tidal(const std::string& arguments, const std::string& input) {
  static std::atomic<int> counter{0};
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(counter++);
  const auto in_path = dir / ("tidal_in_" + tag);
  const auto out_path = dir / ("tidal_out_" + tag);
  const auto err_path = dir / ("tidal_err_" + tag);
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string command = std::string(TIDAL_BINARY_DIR) + "/tidal " + arguments + " <" +
                              in_path.string() + " >" + out_path.string() + " 2>" +
                              err_path.string();
  const int status = std::system(command.c_str());
  CommandResult result{.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                       .out = read_file(out_path),
                       .err = read_file(err_path)};
  std::filesystem::remove(in_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? "," : "") + std::to_string(ids[i]);
  return text;
}

}  // namespace tidal::testing_util
