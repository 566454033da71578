// Reads tokenizer.json in one streaming pass: the model's vocab and merges (hundreds of thousands
// of entries) go straight into flat tables, everything else into a small JSON tree.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "model/tokenizer/bpe_tables.h"

namespace tidal::tok {

struct TokenizerJson {
  nlohmann::json root;  // the whole file minus model.vocab and model.merges
  BpeTables bpe;
};

// Throws tidal::Error naming `source` for invalid JSON and for vocab or merge entries of the wrong
// shape.
TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& source);

}  // namespace tidal::tok
