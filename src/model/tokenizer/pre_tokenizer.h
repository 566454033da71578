// The tokenizer.json "pre_tokenizer": cuts normalised text into the words the model sees
// (Split, ByteLevel and Digits steps, possibly in a Sequence).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/pcre_regex.h"
#include "model/tokenizer/split.h"

namespace tidal::tok {

// Receives the words of a pre-tokenized text, in order.
class WordSink {
 public:
  virtual ~WordSink() = default;
  virtual void word(std::string_view word) = 0;
};

class PreTokenizer {
 public:
  // `config` may be null (the whole text is one word). Throws tidal::Error naming `source` and the
  // type for unsupported pre-tokenizers.
  static PreTokenizer from_json(const nlohmann::json& config, const std::string& source);

  // Passes every non-empty word of `text` to `sink`. Steps run depth first, which gives the same
  // words in the same order as Hugging Face running each step over all pieces.
  void split(std::string_view text, WordSink& sink) const;

 private:
  enum class Kind { kSplit, kByteLevel, kDigits };
  struct Step {
    Kind kind = Kind::kSplit;
    std::optional<Regex> regex{};  // Split's pattern, or GPT-2's for ByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;
    bool individual_digits = false;
  };

  static void add_steps(const nlohmann::json& config, const std::string& source,
                        std::vector<Step>& steps);
  void run(size_t step_index, std::string_view piece, WordSink& sink) const;
  void run_byte_level(size_t step_index, std::string_view piece, WordSink& sink) const;

  std::vector<Step> steps_;
};

}  // namespace tidal::tok
