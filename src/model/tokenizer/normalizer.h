// The tokenizer.json "normalizer": Unicode normalisation forms and lowercasing, in sequence.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace tidal::tok {

class Normalizer {
 public:
  // `config` may be null (no normalisation). Throws tidal::Error naming `source` and the type for
  // anything other than NFC, NFD, NFKC, NFKD, Lowercase and Sequence.
  static Normalizer from_json(const nlohmann::json& config, const std::string& source);

  bool empty() const { return steps_.empty(); }
  std::string apply(std::string_view text) const;

 private:
  enum class Step { kNfc, kNfd, kNfkc, kNfkd, kLowercase };
  static void add_steps(const nlohmann::json& config, const std::string& source,
                        std::vector<Step>& steps);

  std::vector<Step> steps_;
};

}  // namespace tidal::tok
