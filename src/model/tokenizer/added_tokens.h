// The tokenizer.json "added_tokens": special and extra tokens recognised verbatim in the text
// before the model runs, with Hugging Face's lstrip / rstrip / single_word / normalized rules.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tidal::tok {

class BpeModel;
class Normalizer;

struct AddedToken {
  std::string content;
  // What the token is as a token string (id_to_token, the decoder's input): for normalized tokens
  // Hugging Face keeps the normalised content.
  std::string text;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text that is either an added token (`id` >= 0) or plain text for the model. Pieces
// cover the text in order; with rstrip they may overlap, as in Hugging Face.
struct TextPiece {
  size_t begin;
  size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  // `config` may be null. Ids are assigned as Hugging Face assigns them on load (the model's id
  // for a token it already has, else the next free id), which matches the file's for any
  // consistent tokenizer.json.
  static AddedVocabulary from_json(const nlohmann::json& config, const BpeModel& model,
                                   const Normalizer& normalizer, const std::string& source);

  // Splits `text` around the tokens whose `normalized` flag equals `normalized_tokens`: the first
  // pass runs on raw text with the normalized=false tokens, the second on each normalised
  // remainder with the normalized=true ones.
  void split(std::string_view text, bool normalized_tokens, std::vector<TextPiece>& pieces) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  // The id of the added token whose content is `content`.
  std::optional<int32_t> id_of(std::string_view content) const;

 private:
  // Byte trie over token texts, walked from each position for a leftmost-longest match (what the
  // aho-corasick LeftmostLongest automaton in Hugging Face returns).
  class Trie {
   public:
    Trie();
    void insert(std::string_view text, int32_t token_index);
    bool empty() const { return nodes_.size() == 1; }
    // The longest token starting at `pos`: its token index and end, or {-1, pos}.
    std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const;

   private:
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
      int32_t token_index = -1;
    };
    std::vector<Node> nodes_;
    std::vector<bool> first_bytes_;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, int32_t> id_by_content_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace tidal::tok
