// SAX handler that builds the tokenizer.json tree but diverts model.vocab and model.merges.
//
// Building a JSON tree for Qwen3's 151k vocab entries and 151k merges, then tearing it down, costs
// five times what lexing the file does; streaming them keeps loading well under a second.
#include "model/tokenizer/tokenizer_json.h"

#include "common/error.h"

namespace tidal::tok {

namespace {

using Json = nlohmann::json;

class Reader : public nlohmann::json_sax<Json> {
 public:
  explicit Reader(TokenizerJson& out) : out_(out) {}

  // Set when a handler call stopped the parse for a reason other than a syntax error.
  const std::string& shape_error() const { return shape_error_; }
  const std::string& syntax_error() const { return syntax_error_; }

  bool null() override { return value(Json(nullptr)); }
  bool boolean(bool v) override { return value(Json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab) return vocab_id(v);
    return value(Json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) {
      return vocab_id(v > static_cast<number_unsigned_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
    }
    return value(Json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return value(Json(v)); }
  bool binary(binary_t& v) override { return value(Json(Json::binary_t(v))); }

  bool string(string_t& v) override {
    switch (mode_) {
      case Mode::kMerges: {
        RawMerge& merge = out_.bpe.merges.emplace_back();
        merge.text = std::move(v);
        return true;
      }
      case Mode::kMergePair:
        pair_parts_.push_back(std::move(v));
        return true;
      default:
        return value(Json(std::move(v)));
    }
  }

  bool key(string_t& v) override {
    key_ = std::move(v);
    return true;
  }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::kDom && at_model_field("vocab")) {
      mode_ = Mode::kVocab;
      out_.bpe.has_vocab = true;
      return true;
    }
    return open(Json::object());
  }

  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    return close();
  }

  bool start_array(std::size_t) override {
    if (mode_ == Mode::kDom && at_model_field("merges")) {
      mode_ = Mode::kMerges;
      out_.bpe.has_merges = true;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kMergePair;
      pair_parts_.clear();
      return true;
    }
    return open(Json::array());
  }

  bool end_array() override {
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kDom;
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      if (pair_parts_.size() != 2) return bad_merge();
      RawMerge& merge = out_.bpe.merges.emplace_back();
      merge.is_pair = true;
      merge.left = std::move(pair_parts_[0]);
      merge.right = std::move(pair_parts_[1]);
      mode_ = Mode::kMerges;
      return true;
    }
    return close();
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    syntax_error_ = e.what();
    return false;
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  bool at_model_field(std::string_view field) const {
    return stack_.size() == 2 && keys_[1] == "model" && key_ == field;
  }

  // Places `v` where the parser stands (the root, under the pending key, or at an array's end).
  Json* place(Json&& v) {
    if (stack_.empty()) {
      out_.root = std::move(v);
      return &out_.root;
    }
    Json& parent = *stack_.back();
    if (parent.is_object()) {
      Json& slot = parent[key_];
      slot = std::move(v);
      return &slot;
    }
    parent.push_back(std::move(v));
    return &parent.back();
  }

  bool value(Json&& v) {
    if (mode_ == Mode::kVocab) {
      shape_error_ = cat("vocab entry '", key_, "' has no integer id");
      return false;
    }
    if (mode_ != Mode::kDom) return bad_merge();
    place(std::move(v));
    return true;
  }

  bool open(Json&& container) {
    if (mode_ != Mode::kDom) return value(std::move(container));
    const bool in_object = !stack_.empty() && stack_.back()->is_object();
    keys_.push_back(in_object ? key_ : std::string());
    stack_.push_back(place(std::move(container)));
    return true;
  }

  bool close() {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }

  bool vocab_id(int64_t id) {
    out_.bpe.vocab.emplace_back(std::move(key_), id);
    return true;
  }

  bool bad_merge() {
    shape_error_ = cat("merge ", out_.bpe.merges.size(), " is neither \"a b\" nor [\"a\", \"b\"]");
    return false;
  }

  TokenizerJson& out_;
  Mode mode_ = Mode::kDom;
  std::vector<Json*> stack_;       // open containers of the tree
  std::vector<std::string> keys_;  // the key each open container sits under
  std::string key_;
  std::vector<std::string> pair_parts_;
  std::string shape_error_;
  std::string syntax_error_;
};

}  // namespace

TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& source) {
  TokenizerJson out;
  Reader reader(out);
  bool ok = false;
  try {
    ok = Json::sax_parse(text, &reader);
  } catch (const Json::exception& e) {
    TIDAL_FAIL("tokenizer ", source, ": invalid JSON: ", e.what());
  }
  if (!ok) {
    if (!reader.shape_error().empty()) TIDAL_FAIL("tokenizer ", source, ": ", reader.shape_error());
    TIDAL_FAIL("tokenizer ", source, ": invalid JSON: ", reader.syntax_error());
  }
  return out;
}

}  // namespace tidal::tok
