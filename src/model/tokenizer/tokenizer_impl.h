// Tokenizer::Impl, shared by the tokenizer and the incremental detokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/decoder.h"
#include "model/tokenizer/normalizer.h"
#include "model/tokenizer/post_processor.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {

struct Tokenizer::Impl {
  tok::Normalizer normalizer;
  tok::PreTokenizer pre_tokenizer;
  tok::BpeModel model;
  tok::AddedVocabulary added;
  tok::Decoder decoder;
  tok::PostProcessor post_processor;
  int32_t vocab_size = 0;

  // Per id, filled once at load so that decoding is a lookup: the decoder's bytes for the token and
  // whether the id exists and is special.
  std::string decoded_bytes;
  std::vector<uint32_t> decoded_offsets;  // vocab_size + 1 entries into decoded_bytes
  std::vector<int32_t> added_index;       // index into added.tokens(), or -1
  std::vector<uint8_t> flags;
  static constexpr uint8_t kKnown = 1;
  static constexpr uint8_t kSpecial = 2;  // an added token declared special
  // Dropped by skip_special_tokens. Hugging Face decides by the token string, so a model token
  // spelled like a special token is skipped too, and a special token whose normalised text differs
  // from its content is not; for real tokenizers this equals kSpecial.
  static constexpr uint8_t kSkipped = 4;

  bool known(int32_t id) const { return id >= 0 && id < vocab_size && (flags[id] & kKnown); }
  bool special(int32_t id) const { return known(id) && (flags[id] & kSpecial); }
  // Whether decode keeps `id`: unknown ids are dropped silently, as Hugging Face does.
  bool keeps(int32_t id, bool skip_special_tokens) const {
    return known(id) && !(skip_special_tokens && (flags[id] & kSkipped));
  }
  std::string_view decoded(int32_t id) const {
    return std::string_view(decoded_bytes)
        .substr(decoded_offsets[id], decoded_offsets[id + 1] - decoded_offsets[id]);
  }
  const std::string* token_text(int32_t id) const;
  void build_decode_tables();
};

}  // namespace tidal
