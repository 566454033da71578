// Normalizer steps backed by utf8proc.
#include "model/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "common/error.h"
#include "model/tokenizer/json_fields.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

bool is_ascii(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::string unicode_normalize(std::string_view text, utf8proc_option_t options) {
  // ASCII is already in every normalisation form.
  if (is_ascii(text)) return std::string(text);
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &mapped,
                   static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  TIDAL_CHECK(length >= 0, "utf8proc normalisation failed: ", utf8proc_errmsg(length));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
  return std::string(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
}

// Rust's char::to_lowercase per character, which is what Hugging Face's Lowercase applies.
std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto byte = static_cast<unsigned char>(text[pos]);
    if (byte < 0x80) {
      out.push_back(byte >= 'A' && byte <= 'Z' ? static_cast<char>(byte + ('a' - 'A'))
                                               : static_cast<char>(byte));
      ++pos;
      continue;
    }
    const char32_t c = next_code_point(text, pos);
    if (c == 0x130) {
      // The one unconditional multi-character lowercase mapping: İ -> i + combining dot above.
      out += "i\xCC\x87";
      continue;
    }
    append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
  }
  return out;
}

}  // namespace

void Normalizer::add_steps(const Json& config, const std::string& source,
                           std::vector<Step>& steps) {
  if (config.is_null()) return;
  const std::string type = type_field(config, "normalizer", source);
  if (type == "NFC") {
    steps.push_back(Step::kNfc);
  } else if (type == "NFD") {
    steps.push_back(Step::kNfd);
  } else if (type == "NFKC") {
    steps.push_back(Step::kNfkc);
  } else if (type == "NFKD") {
    steps.push_back(Step::kNfkd);
  } else if (type == "Lowercase") {
    steps.push_back(Step::kLowercase);
  } else if (type == "Sequence") {
    const Json& list = require_field(config, "normalizers", "Sequence normalizer", source);
    TIDAL_CHECK(list.is_array(), "tokenizer ", source, ": \"normalizers\" is not an array");
    for (const Json& item : list) add_steps(item, source, steps);
  } else {
    TIDAL_FAIL("tokenizer ", source, ": unsupported normalizer type '", type, "'");
  }
}

Normalizer Normalizer::from_json(const Json& config, const std::string& source) {
  Normalizer normalizer;
  add_steps(config, source, normalizer.steps_);
  return normalizer;
}

std::string Normalizer::apply(std::string_view text) const {
  std::string current(text);
  for (const Step step : steps_) {
    switch (step) {
      case Step::kNfc:
        current = unicode_normalize(current, UTF8PROC_COMPOSE);
        break;
      case Step::kNfd:
        current = unicode_normalize(current, UTF8PROC_DECOMPOSE);
        break;
      case Step::kNfkc:
        current = unicode_normalize(
            current, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
        break;
      case Step::kNfkd:
        current = unicode_normalize(
            current, static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
        break;
      case Step::kLowercase:
        current = lowercase(current);
        break;
    }
  }
  return current;
}

}  // namespace tidal::tok
