// Added-token loading and the Hugging Face find_matches rules over a leftmost-longest trie.
#include "model/tokenizer/added_tokens.h"

#include <algorithm>

#include "common/error.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/json_fields.h"
#include "model/tokenizer/normalizer.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

// The character class tests Hugging Face runs with the regex crate: \w$, ^\w, \s*$ and ^\s*.
bool ends_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t pos = start;
  return is_regex_word_char(next_code_point(text, pos));
}

bool starts_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t pos = 0;
  return is_regex_word_char(next_code_point(text, pos));
}

// Start of the whitespace run that ends `text`.
size_t trailing_space_start(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_white_space(next_code_point(text, pos))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `text`.
size_t leading_space_length(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!is_white_space(next_code_point(text, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

AddedVocabulary::Trie::Trie() : nodes_(1), first_bytes_(256, false) {}

void AddedVocabulary::Trie::insert(std::string_view text, int32_t token_index) {
  first_bytes_[static_cast<unsigned char>(text.front())] = true;
  int32_t node = 0;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    auto& children = nodes_[node].children;
    const auto it =
        std::lower_bound(children.begin(), children.end(), byte,
                         [](const auto& child, unsigned char b) { return child.first < b; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes_.size());
      children.insert(it, {byte, child});
      nodes_.emplace_back();
      node = child;
    }
  }
  // An identical text added earlier keeps the match, as the lower aho-corasick pattern id would.
  if (nodes_[node].token_index < 0) nodes_[node].token_index = token_index;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::longest_at(std::string_view text,
                                                             size_t pos) const {
  std::pair<int32_t, size_t> best{-1, pos};
  if (!first_bytes_[static_cast<unsigned char>(text[pos])]) return best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& children = nodes_[node].children;
    const auto it =
        std::lower_bound(children.begin(), children.end(), byte,
                         [](const auto& child, unsigned char b) { return child.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes_[node].token_index >= 0) best = {nodes_[node].token_index, i + 1};
  }
  return best;
}

AddedVocabulary AddedVocabulary::from_json(const Json& config, const BpeModel& model,
                                           const Normalizer& normalizer,
                                           const std::string& source) {
  AddedVocabulary vocabulary;
  if (config.is_null()) return vocabulary;
  TIDAL_CHECK(config.is_array(), "tokenizer ", source, ": \"added_tokens\" is not an array");
  std::unordered_map<std::string, size_t> index_by_content;
  int32_t max_added_id = -1;
  for (const Json& entry : config) {
    AddedToken token;
    const Json& content = require_field(entry, "content", "an added token", source);
    TIDAL_CHECK(content.is_string(), "tokenizer ", source, ": added token content is not a string");
    token.content = content.get<std::string>();
    const Json& id = require_field(entry, "id", "added token '" + token.content + "'", source);
    TIDAL_CHECK(id.is_number_integer(), "tokenizer ", source, ": added token '", token.content,
                "' has no integer id");
    token.special = bool_field(entry, "special", false);
    token.single_word = bool_field(entry, "single_word", false);
    token.lstrip = bool_field(entry, "lstrip", false);
    token.rstrip = bool_field(entry, "rstrip", false);
    token.normalized = bool_field(entry, "normalized", !token.special);
    // Hugging Face ignores empty tokens: they would match everywhere.
    if (token.content.empty()) continue;
    // Hugging Face does not trust the id written in the file: it re-adds the tokens in order, and a
    // token takes its existing id or the next free one after the model's vocabulary. For any
    // consistent file that is the id written there.
    const auto known = index_by_content.find(token.content);
    if (known != index_by_content.end()) {
      token.id = vocabulary.tokens_[known->second].id;
      vocabulary.tokens_[known->second] = std::move(token);  // the later definition wins
      continue;
    }
    if (const auto model_id = model.token_to_id(token.content)) {
      token.id = *model_id;
    } else {
      const int32_t model_count = model.vocab_count();
      token.id = max_added_id < 0                                    ? model_count
                 : (max_added_id >= model_count || model_count == 0) ? max_added_id + 1
                                                                     : model_count;
    }
    max_added_id = std::max(max_added_id, token.id);
    index_by_content.emplace(token.content, vocabulary.tokens_.size());
    vocabulary.tokens_.push_back(std::move(token));
  }
  // Hugging Face's matching order: special tokens before the others.
  std::vector<int32_t> order(vocabulary.tokens_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return vocabulary.tokens_[a].special && !vocabulary.tokens_[b].special;
  });
  for (const int32_t index : order) {
    AddedToken& token = vocabulary.tokens_[index];
    token.text = token.normalized ? normalizer.apply(token.content) : token.content;
    if (token.text.empty()) continue;
    (token.normalized ? vocabulary.normalized_trie_ : vocabulary.raw_trie_)
        .insert(token.text, index);
  }
  for (const AddedToken& token : vocabulary.tokens_) {
    vocabulary.id_by_content_.emplace(token.content, token.id);
  }
  return vocabulary;
}

std::optional<int32_t> AddedVocabulary::id_of(std::string_view content) const {
  const auto it = id_by_content_.find(std::string(content));
  if (it == id_by_content_.end()) return std::nullopt;
  return it->second;
}

void AddedVocabulary::split(std::string_view text, bool normalized_tokens,
                            std::vector<TextPiece>& pieces) const {
  const Trie& trie = normalized_tokens ? normalized_trie_ : raw_trie_;
  if (trie.empty()) {
    pieces.push_back({0, text.size(), -1});
    return;
  }
  size_t piece_start = 0;  // where the text not yet given to a piece begins
  size_t search = 0;
  while (search < text.size()) {
    const auto [token_index, match_end] = trie.longest_at(text, search);
    if (token_index < 0) {
      ++search;
      continue;
    }
    const AddedToken& token = tokens_[token_index];
    size_t start = search;
    size_t stop = match_end;
    // Like the automaton, the next search resumes at the end of the raw match.
    search = match_end;
    if (token.single_word) {
      const bool word_before = start != 0 && ends_with_word(text.substr(0, start));
      const bool word_after = stop != text.size() && starts_with_word(text.substr(stop));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), piece_start);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (piece_start < start) pieces.push_back({piece_start, start, -1});
    pieces.push_back({start, stop, token.id});
    piece_start = stop;
  }
  if (piece_start != text.size()) pieces.push_back({piece_start, text.size(), -1});
}

}  // namespace tidal::tok
