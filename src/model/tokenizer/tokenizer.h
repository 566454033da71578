// A tokenizer driven by a Hugging Face tokenizer.json: byte-level BPE with its normalizer,
// pre-tokenizer sequence (Split regexes, ByteLevel, ...), decoder, and added/special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tidal {

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one. Throws tidal::Error naming the file
  // and the unsupported or malformed part.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(std::string_view json_text, const std::string& source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Like Hugging Face's encode(text, add_special_tokens=False): no BOS/EOS added, but added and
  // special tokens written in the text are recognised.
  std::vector<int32_t> encode(std::string_view text) const;
  // encode(text, add_special_tokens): with true, also what the file's post-processor puts around
  // one text (a BOS, say), as Hugging Face does. Throws tidal::Error for a post-processor type
  // tidal cannot apply.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Bytes that do not form valid UTF-8 become U+FFFD, as Hugging Face does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  int32_t vocab_size() const;  // highest id + 1, added tokens included
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // The bytes the decoder makes of `id` alone (possibly part of a UTF-8 character; empty for an
  // unknown id): what a grammar engine matches the token's text against.
  std::string_view token_bytes(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class IncrementalDetokenizer;
};

// Streaming detokenization: push ids one at a time, get only text that is final. Never emits
// half a UTF-8 character; the concatenation of every push() and flush() equals decode(all ids).
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;     // decoder bytes not yet returned: at most an unfinished character
  bool any_token_ = false;  // whether a kept token came before (decoders with a separator)
};

}  // namespace tidal
