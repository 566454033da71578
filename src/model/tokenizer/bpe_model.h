// The tokenizer.json "model" of type BPE: vocabulary, ranked merges, and the merge loop that turns
// one pre-tokenized word into ids.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer/bpe_tables.h"

namespace tidal::tok {

class BpeModel {
 public:
  // Throws tidal::Error naming `source` for a non-BPE model, merges naming unknown tokens, and the
  // options left unsupported (dropout, byte_fallback, subword prefix/suffix).
  // `config` is the "model" object; its vocab and merges arrive separately in `tables`.
  static BpeModel from_json(const nlohmann::json& config, BpeTables tables,
                            const std::string& source);

  // Appends the ids of `word`, merged as Hugging Face's BPE::merge_word + Word::merge_all do.
  void tokenize(std::string_view word, std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Null when `id` is not in the vocabulary.
  const std::string* id_to_token(int32_t id) const;
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }  // highest id + 1
  int32_t vocab_count() const { return static_cast<int32_t>(vocab_.size()); }

 private:
  struct Merge {
    int32_t rank = -1;  // position in "merges": lower merges first
    int32_t new_id = -1;
  };

  // Open addressing on the (left id, right id) pair: the merge loop's only hot lookup.
  class MergeTable {
   public:
    void reserve(size_t count);
    void insert(int32_t left, int32_t right, Merge merge);  // a later duplicate replaces
    const Merge* find(int32_t left, int32_t right) const;

   private:
    static uint64_t key(int32_t left, int32_t right) {
      return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
             static_cast<uint32_t>(right);
    }
    size_t slot(uint64_t key) const;
    std::vector<uint64_t> keys_;
    std::vector<Merge> values_;
    size_t mask_ = 0;
  };

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };

  int32_t char_id(std::string_view character) const;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> tokens_;   // by id
  std::vector<bool> has_token_;       // ids may be sparse
  std::vector<int32_t> small_chars_;  // id of each code point below kSmallChars as a token, or -1
  MergeTable merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace tidal::tok
