// The tokenizer.json "decoder": how token strings become text. Only decoders that act on each
// token independently are supported, so that decoding can stream byte by byte.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>

namespace tidal::tok {

class Decoder {
 public:
  // `config` may be null: Hugging Face then joins the token strings with spaces. Throws
  // tidal::Error naming `source` and the type for anything but ByteLevel (alone or in a Sequence).
  static Decoder from_json(const nlohmann::json& config, const std::string& source);

  // Appends the bytes `token` contributes. The decoded text is these bytes of every kept token,
  // joined by separator(), then repaired as lossy UTF-8.
  void append_token(std::string_view token, std::string& bytes) const;
  std::string_view separator() const { return separator_; }

 private:
  bool byte_level_ = false;
  std::string separator_;
};

}  // namespace tidal::tok
