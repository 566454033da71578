// tokenizer.json's "post_processor": the special tokens encode(text, add_special_tokens=True) puts
// around a single text (a BOS for Llama-, Mistral- and DeepSeek-style files; nothing for Qwen's,
// whose ByteLevel post-processor only moves offsets).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tidal::tok {

class PostProcessor {
 public:
  // null, ByteLevel, TemplateProcessing (its "single" template), BertProcessing,
  // RobertaProcessing, and Sequence of those. Another type loads (encoding without special tokens
  // does not need it) but add_special_tokens then throws, naming it.
  static PostProcessor from_json(const nlohmann::json& json, const std::string& source);

  // Puts the template's special tokens around `ids` (one text's encoding).
  std::vector<int32_t> add_special_tokens(std::vector<int32_t> ids) const;

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
  std::string unsupported_;  // the type that could not be read, with the file
};

}  // namespace tidal::tok
