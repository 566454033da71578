// Helpers shared by the tokenizer tests: fixture paths, JSONL reading, UTF-8 validity.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/tokenizer/utf8.h"

namespace tidal::testing {

inline std::string tokenizer_fixture(const std::string& name) {
  return std::string(TIDAL_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + name;
}

// One parsed JSON value per non-empty line. Lines are split on '\n' only.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<nlohmann::json> values;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) values.push_back(nlohmann::json::parse(line));
  }
  return values;
}

inline bool valid_utf8(const std::string& text) {
  return tok::is_valid_utf8(text);
}

}  // namespace tidal::testing
