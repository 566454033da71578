// Tokenizer: loads tokenizer.json and runs Hugging Face's encode pipeline (added tokens,
// normalizer, pre-tokenizer, BPE) and decode.
//
// "truncation" and "padding" are not read (the server bounds lengths itself); "post_processor"
// only matters to encode(text, add_special_tokens=true).
#include "model/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <unordered_set>

#include "common/error.h"
#include "common/mapped_file.h"
#include "model/tokenizer/json_fields.h"
#include "model/tokenizer/tokenizer_impl.h"
#include "model/tokenizer/tokenizer_json.h"
#include "model/tokenizer/utf8.h"

namespace tidal {

namespace {

class IdSink : public tok::WordSink {
 public:
  IdSink(const tok::BpeModel& model, std::vector<int32_t>& ids) : model_(model), ids_(ids) {}
  void word(std::string_view word) override { model_.tokenize(word, ids_); }

 private:
  const tok::BpeModel& model_;
  std::vector<int32_t>& ids_;
};

const tok::Json& field_or_null(const tok::Json& root, std::string_view key) {
  static const tok::Json kNull;
  const auto it = root.find(key);
  return it == root.end() ? kNull : *it;
}

}  // namespace

const std::string* Tokenizer::Impl::token_text(int32_t id) const {
  if (id >= 0 && id < vocab_size && added_index[id] >= 0) {
    return &added.tokens()[added_index[id]].text;
  }
  return model.id_to_token(id);
}

void Tokenizer::Impl::build_decode_tables() {
  std::unordered_set<std::string_view> special_contents;
  for (const tok::AddedToken& token : added.tokens()) {
    if (token.special) special_contents.insert(token.content);
  }
  flags.assign(vocab_size, 0);
  decoded_offsets.assign(static_cast<size_t>(vocab_size) + 1, 0);
  decoded_bytes.clear();
  for (int32_t id = 0; id < vocab_size; ++id) {
    decoded_offsets[id] = static_cast<uint32_t>(decoded_bytes.size());
    const std::string* text = token_text(id);
    if (text == nullptr) continue;
    uint8_t id_flags = kKnown;
    if (special_contents.contains(*text)) id_flags |= kSkipped;
    if (added_index[id] >= 0 && added.tokens()[added_index[id]].special) id_flags |= kSpecial;
    flags[id] = id_flags;
    decoder.append_token(*text, decoded_bytes);
  }
  decoded_offsets[vocab_size] = static_cast<uint32_t>(decoded_bytes.size());
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string file = path;
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    file = (std::filesystem::path(path) / "tokenizer.json").string();
  }
  if (!std::filesystem::exists(file, error)) {
    TIDAL_FAIL("tokenizer ", file, ": file not found");
  }
  return from_json(read_text_file(file), file);
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& source_name) {
  const std::string& source = source_name;
  tok::TokenizerJson parsed = tok::parse_tokenizer_json(json_text, source);
  const tok::Json& root = parsed.root;
  TIDAL_CHECK(root.is_object(), "tokenizer ", source, ": top level is not a JSON object");
  if (!root.contains("model")) TIDAL_FAIL("tokenizer ", source, ": missing \"model\"");

  auto impl = std::make_unique<Impl>();
  try {
    impl->normalizer = tok::Normalizer::from_json(field_or_null(root, "normalizer"), source);
    impl->pre_tokenizer =
        tok::PreTokenizer::from_json(field_or_null(root, "pre_tokenizer"), source);
    impl->model = tok::BpeModel::from_json(root["model"], std::move(parsed.bpe), source);
    impl->added = tok::AddedVocabulary::from_json(field_or_null(root, "added_tokens"), impl->model,
                                                  impl->normalizer, source);
    impl->decoder = tok::Decoder::from_json(field_or_null(root, "decoder"), source);
    impl->post_processor =
        tok::PostProcessor::from_json(field_or_null(root, "post_processor"), source);
  } catch (const tok::Json::exception& e) {
    // A field of the wrong JSON type somewhere in the file.
    TIDAL_FAIL("tokenizer ", source, ": malformed: ", e.what());
  }

  impl->vocab_size = impl->model.id_limit();
  for (const tok::AddedToken& token : impl->added.tokens()) {
    impl->vocab_size = std::max(impl->vocab_size, token.id + 1);
  }
  impl->added_index.assign(impl->vocab_size, -1);
  const auto& added_tokens = impl->added.tokens();
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    impl->added_index[added_tokens[i].id] = static_cast<int32_t>(i);
  }
  impl->build_decode_tables();
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  // Hugging Face only ever sees valid strings; repair stray bytes the way decoding would.
  std::string repaired;
  if (!tok::is_valid_utf8(text)) {
    repaired = tok::lossy_utf8(text);
    text = repaired;
  }
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  IdSink sink(impl.model, ids);

  std::vector<tok::TextPiece> raw_pieces;
  impl.added.split(text, false, raw_pieces);
  std::vector<tok::TextPiece> pieces;
  for (const tok::TextPiece& raw : raw_pieces) {
    if (raw.begin == raw.end) continue;
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    const std::string_view raw_text = text.substr(raw.begin, raw.end - raw.begin);
    std::string normalized_storage;
    std::string_view normalized = raw_text;
    if (!impl.normalizer.empty()) {
      normalized_storage = impl.normalizer.apply(raw_text);
      normalized = normalized_storage;
    }
    pieces.clear();
    impl.added.split(normalized, true, pieces);
    for (const tok::TextPiece& piece : pieces) {
      if (piece.begin == piece.end) continue;
      if (piece.id >= 0) {
        ids.push_back(piece.id);
      } else {
        impl.pre_tokenizer.split(normalized.substr(piece.begin, piece.end - piece.begin), sink);
      }
    }
  }
  return ids;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids = encode(text);
  return add_special_tokens ? impl_->post_processor.add_special_tokens(std::move(ids)) : ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  std::string bytes;
  bool first = true;
  for (const int32_t id : ids) {
    if (!impl.keeps(id, skip_special_tokens)) continue;
    if (!first) bytes += impl.decoder.separator();
    bytes += impl.decoded(id);
    first = false;
  }
  return tok::lossy_utf8(bytes);
}

int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto id = impl_->added.id_of(token)) return id;
  return impl_->model.token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  const std::string* text = impl_->token_text(id);
  return text == nullptr ? std::string() : *text;
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_->special(id);
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  return impl_->known(id) ? impl_->decoded(id) : std::string_view();
}

}  // namespace tidal
