// The BPE model's vocab and merges as read from tokenizer.json, before any indexing.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tidal::tok {

// One entry of "merges": either the "a b" string form (`text`) or the ["a", "b"] pair form.
struct RawMerge {
  bool is_pair = false;
  std::string text;  // string form
  std::string left;  // pair form
  std::string right;
};

struct BpeTables {
  bool has_vocab = false;
  bool has_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;  // in file order
  std::vector<RawMerge> merges;
};

}  // namespace tidal::tok
