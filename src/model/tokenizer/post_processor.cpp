// The single-text templates of Hugging Face's post-processors, read into a prefix and a suffix.
#include "model/tokenizer/post_processor.h"

#include "common/error.h"

namespace tidal::tok {
namespace {

// [token, id] of BertProcessing's and RobertaProcessing's "cls" and "sep".
int32_t pair_id(const nlohmann::json& pair, const char* name, const std::string& source) {
  TIDAL_CHECK(pair.is_array() && pair.size() == 2 && pair[1].is_number_integer(), "tokenizer ",
              source, ": post_processor.", name, " is not [token, id]");
  return pair[1].get<int32_t>();
}

}  // namespace

PostProcessor PostProcessor::from_json(const nlohmann::json& json, const std::string& source) {
  PostProcessor processor;
  if (json.is_null()) return processor;
  const std::string type = json.value("type", "");
  if (type == "ByteLevel") return processor;
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    processor.prefix_ = {pair_id(json.at("cls"), "cls", source)};
    processor.suffix_ = {pair_id(json.at("sep"), "sep", source)};
    return processor;
  }
  if (type == "TemplateProcessing") {
    const nlohmann::json& special = json.at("special_tokens");
    bool seen_sequence = false;
    for (const nlohmann::json& item : json.at("single")) {
      if (item.contains("Sequence")) {
        TIDAL_CHECK(!seen_sequence && item["Sequence"].value("id", "") == "A", "tokenizer ", source,
                    ": post_processor.single must hold the sequence A once");
        seen_sequence = true;
        continue;
      }
      const std::string name = item.at("SpecialToken").at("id").get<std::string>();
      TIDAL_CHECK(special.contains(name), "tokenizer ", source, ": post_processor names '", name,
                  "', which its special_tokens do not define");
      std::vector<int32_t>& side = seen_sequence ? processor.suffix_ : processor.prefix_;
      for (const nlohmann::json& id : special[name].at("ids")) side.push_back(id.get<int32_t>());
    }
    TIDAL_CHECK(seen_sequence, "tokenizer ", source, ": post_processor.single has no sequence");
    return processor;
  }
  if (type == "Sequence") {
    // Each processor wraps what the ones before it made.
    for (const nlohmann::json& part : json.at("processors")) {
      const PostProcessor inner = from_json(part, source);
      if (!inner.unsupported_.empty()) return inner;
      processor.prefix_.insert(processor.prefix_.begin(), inner.prefix_.begin(),
                               inner.prefix_.end());
      processor.suffix_.insert(processor.suffix_.end(), inner.suffix_.begin(), inner.suffix_.end());
    }
    return processor;
  }
  processor.unsupported_ = cat("tokenizer ", source, ": post_processor type '", type, "'");
  return processor;
}

std::vector<int32_t> PostProcessor::add_special_tokens(std::vector<int32_t> ids) const {
  if (!unsupported_.empty())
    TIDAL_FAIL(unsupported_, " is not supported: add_special_tokens=true cannot be honoured");
  if (prefix_.empty() && suffix_.empty()) return ids;
  std::vector<int32_t> out = prefix_;
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

}  // namespace tidal::tok
