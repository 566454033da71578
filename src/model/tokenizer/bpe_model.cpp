// BPE vocabulary and merge loading, and the priority-queue merge of one word.
#include "model/tokenizer/bpe_model.h"

#include <algorithm>

#include "common/error.h"
#include "model/tokenizer/json_fields.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

// Byte-level vocabularies spell every byte with a code point below U+0144, so a flat table answers
// the first lookup of nearly every symbol.
constexpr char32_t kSmallChars = 0x800;

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

// A merge candidate between symbol `pos` and its right neighbour.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
};

// Heap order: lowest rank first, then leftmost, as Hugging Face's Merge ordering.
bool pops_later(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

std::string_view optional_string(const Json& config, std::string_view key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  return it->get_ref<const std::string&>();
}

}  // namespace

void BpeModel::MergeTable::reserve(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2) capacity *= 2;
  keys_.assign(capacity, ~uint64_t{0});
  values_.assign(capacity, Merge{});
  mask_ = capacity - 1;
}

size_t BpeModel::MergeTable::slot(uint64_t k) const {
  size_t index = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  while (keys_[index] != k && keys_[index] != ~uint64_t{0}) index = (index + 1) & mask_;
  return index;
}

void BpeModel::MergeTable::insert(int32_t left, int32_t right, Merge merge) {
  const uint64_t k = key(left, right);
  const size_t index = slot(k);
  keys_[index] = k;
  values_[index] = merge;
}

const BpeModel::Merge* BpeModel::MergeTable::find(int32_t left, int32_t right) const {
  const size_t index = slot(key(left, right));
  return keys_[index] == ~uint64_t{0} ? nullptr : &values_[index];
}

BpeModel BpeModel::from_json(const Json& config, BpeTables tables, const std::string& source) {
  TIDAL_CHECK(config.is_object(), "tokenizer ", source, ": \"model\" is not a JSON object");
  // Hugging Face also accepts an untagged model; a BPE one is recognised by its merges.
  const std::string type = config.contains("type") ? type_field(config, "model", source)
                           : tables.has_merges     ? "BPE"
                                                   : "unknown";
  if (type != "BPE") {
    TIDAL_FAIL("tokenizer ", source, ": unsupported model type '", type, "' (only BPE is)");
  }
  if (const auto it = config.find("dropout"); it != config.end() && !it->is_null()) {
    if (it->get<double>() != 0.0) {
      TIDAL_FAIL("tokenizer ", source, ": BPE dropout is unsupported (it makes encoding random)");
    }
  }
  if (bool_field(config, "byte_fallback", false)) {
    TIDAL_FAIL("tokenizer ", source, ": BPE byte_fallback is unsupported");
  }
  if (!optional_string(config, "continuing_subword_prefix").empty()) {
    TIDAL_FAIL("tokenizer ", source, ": BPE continuing_subword_prefix is unsupported");
  }
  if (!optional_string(config, "end_of_word_suffix").empty()) {
    TIDAL_FAIL("tokenizer ", source, ": BPE end_of_word_suffix is unsupported");
  }
  if (!tables.has_vocab) TIDAL_FAIL("tokenizer ", source, ": model has no \"vocab\" object");
  if (!tables.has_merges) TIDAL_FAIL("tokenizer ", source, ": model has no \"merges\" array");

  BpeModel model;
  model.vocab_.reserve(tables.vocab.size());
  int32_t max_id = -1;
  for (auto& [token, id] : tables.vocab) {
    TIDAL_CHECK(id >= 0 && id < INT32_MAX, "tokenizer ", source, ": vocab entry '", token,
                "' has id ", id, " out of range");
    const auto id32 = static_cast<int32_t>(id);
    // A repeated key keeps its last id, as a JSON object read into a map does.
    model.vocab_.insert_or_assign(std::move(token), id32);
    max_id = std::max(max_id, id32);
  }
  tables.vocab.clear();
  model.tokens_.resize(static_cast<size_t>(max_id + 1));
  model.has_token_.assign(static_cast<size_t>(max_id + 1), false);
  model.small_chars_.assign(kSmallChars, -1);
  for (const auto& [token, id] : model.vocab_) {
    model.tokens_[id] = token;
    model.has_token_[id] = true;
    if (token.empty()) continue;
    size_t pos = 0;
    const char32_t c = next_code_point(token, pos);
    if (pos == token.size() && c < kSmallChars) model.small_chars_[c] = id;
  }

  model.merges_.reserve(tables.merges.size());
  const auto lookup = [&](const std::string& token, size_t rank) {
    const auto it = model.vocab_.find(token);
    if (it == model.vocab_.end()) {
      TIDAL_FAIL("tokenizer ", source, ": merge ", rank, " refers to unknown token '", token, "'");
    }
    return it->second;
  };
  std::string joined;
  for (size_t rank = 0; rank < tables.merges.size(); ++rank) {
    RawMerge& merge = tables.merges[rank];
    if (!merge.is_pair) {
      // The older "a b" form; byte-level tokens never contain a plain space.
      const size_t space = merge.text.find(' ');
      if (space == std::string::npos || merge.text.find(' ', space + 1) != std::string::npos) {
        TIDAL_FAIL("tokenizer ", source, ": merge ", rank, " '", merge.text, "' is not two tokens");
      }
      merge.left.assign(merge.text, 0, space);
      merge.right.assign(merge.text, space + 1);
    }
    joined.assign(merge.left);
    joined.append(merge.right);
    const int32_t left_id = lookup(merge.left, rank);
    const int32_t right_id = lookup(merge.right, rank);
    const int32_t new_id = lookup(joined, rank);
    model.merges_.insert(left_id, right_id, {static_cast<int32_t>(rank), new_id});
  }

  if (const std::string_view unk = optional_string(config, "unk_token"); !unk.empty()) {
    const auto it = model.vocab_.find(unk);
    if (it == model.vocab_.end()) {
      TIDAL_FAIL("tokenizer ", source, ": unk_token '", unk, "' is not in the vocabulary");
    }
    model.unk_id_ = it->second;
  }
  model.fuse_unk_ = bool_field(config, "fuse_unk", false);
  model.ignore_merges_ = bool_field(config, "ignore_merges", false);
  return model;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_token_[id]) return nullptr;
  return &tokens_[id];
}

int32_t BpeModel::char_id(std::string_view character) const {
  size_t pos = 0;
  const char32_t c = next_code_point(character, pos);
  if (c < kSmallChars) return small_chars_[c];
  const auto it = vocab_.find(character);
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  merge_word(word, ids);
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // Scratch reused across words; encode() may run on many threads at once.
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> queue;
  symbols.clear();
  queue.clear();

  // Characters missing from the vocabulary become unk (fused if asked) or vanish, as in HF.
  std::optional<int32_t> pending_unk;
  const auto add_symbol = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t length = utf8_length(static_cast<unsigned char>(word[pos]));
    const int32_t id = char_id(word.substr(pos, length));
    pos += length;
    if (id >= 0) {
      if (pending_unk) add_symbol(*std::exchange(pending_unk, std::nullopt));
      add_symbol(id);
    } else if (unk_id_) {
      if (pending_unk && !fuse_unk_) add_symbol(*pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk) add_symbol(*pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  const auto count = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i + 1 < count; ++i) {
    if (const Merge* merge = merges_.find(symbols[i].id, symbols[i + 1].id)) {
      queue.push_back({merge->rank, i, merge->new_id});
    }
  }
  std::make_heap(queue.begin(), queue.end(), pops_later);

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), pops_later);
    const Candidate top = queue.back();
    queue.pop_back();
    Symbol& current = symbols[top.pos];
    if (!current.alive || current.next < 0) continue;
    Symbol& right = symbols[current.next];
    // Entries go stale when a neighbour merged since they were queued.
    const Merge* still = merges_.find(current.id, right.id);
    if (still == nullptr || still->new_id != top.new_id) continue;

    current.id = top.new_id;
    current.next = right.next;
    right.alive = false;
    if (current.next >= 0) symbols[current.next].prev = top.pos;

    if (current.prev >= 0) {
      if (const Merge* merge = merges_.find(symbols[current.prev].id, current.id)) {
        queue.push_back({merge->rank, current.prev, merge->new_id});
        std::push_heap(queue.begin(), queue.end(), pops_later);
      }
    }
    if (current.next >= 0) {
      if (const Merge* merge = merges_.find(current.id, symbols[current.next].id)) {
        queue.push_back({merge->rank, top.pos, merge->new_id});
        std::push_heap(queue.begin(), queue.end(), pops_later);
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace tidal::tok
