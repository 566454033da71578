// Decoder configuration: ByteLevel, a Sequence of it, or none.
#include "model/tokenizer/decoder.h"

#include "common/error.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/json_fields.h"

namespace tidal::tok {

Decoder Decoder::from_json(const Json& config, const std::string& source) {
  Decoder decoder;
  if (config.is_null()) {
    decoder.separator_.push_back(' ');  // HF joins undecoded tokens with spaces
    return decoder;
  }
  const std::string type = type_field(config, "decoder", source);
  if (type == "ByteLevel") {
    decoder.byte_level_ = true;
  } else if (type == "Sequence") {
    const Json& list = require_field(config, "decoders", "Sequence decoder", source);
    TIDAL_CHECK(list.is_array(), "tokenizer ", source, ": \"decoders\" is not an array");
    for (const Json& item : list) {
      const std::string item_type = type_field(item, "decoder", source);
      if (item_type != "ByteLevel") {
        TIDAL_FAIL("tokenizer ", source, ": unsupported decoder type '", item_type,
                   "' in Sequence");
      }
      // A second ByteLevel would decode bytes again; no real tokenizer does that.
      if (decoder.byte_level_) {
        TIDAL_FAIL("tokenizer ", source, ": more than one ByteLevel decoder in Sequence");
      }
      decoder.byte_level_ = true;
    }
  } else {
    TIDAL_FAIL("tokenizer ", source, ": unsupported decoder type '", type, "'");
  }
  return decoder;
}

void Decoder::append_token(std::string_view token, std::string& bytes) const {
  if (byte_level_) {
    append_byte_level_decoded(token, bytes);
  } else {
    bytes.append(token);
  }
}

}  // namespace tidal::tok
