// Typed, validated access to the fields of a Hugging Face config.json, shared by the common
// parser (model_config.cpp) and each family's own fields (src/model/arch/<family>/).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/model_config.h"

namespace tidal {

// A short rendering of a value for error messages; long arrays and strings are cut.
inline std::string describe_json(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return cat(value.type_name(), " ", text);
}

// Typed access to one JSON object; every error names the source file and the field. A null
// value counts as absent: save_pretrained writes null for unset optional fields.
class ConfigFields {
 public:
  ConfigFields(const nlohmann::json& object, const std::string& source)
      : object_(object), source_(source) {}

  const std::string& source() const { return source_; }
  bool present(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }
  const nlohmann::json& at(const char* key) const { return object_[key]; }

  template <typename... Parts>
  [[noreturn]] void fail(const char* key, Parts&&... parts) const {
    TIDAL_FAIL(source_, ": field '", key, "' ", std::forward<Parts>(parts)...);
  }

  std::optional<int64_t> optional_int(const char* key) const {
    if (!present(key)) return std::nullopt;
    return to_int(key, at(key));
  }
  int64_t required_int(const char* key) const {
    if (!object_.contains(key)) TIDAL_FAIL(source_, ": missing required field '", key, "'");
    if (at(key).is_null()) fail(key, "is null, expected an integer");
    return to_int(key, at(key));
  }
  int64_t required_positive(const char* key) const {
    const int64_t value = required_int(key);
    if (value <= 0) fail(key, "must be positive, got ", value);
    return value;
  }
  int64_t to_int(const char* key, const nlohmann::json& value) const {
    if (value.is_number_unsigned()) {
      if (value.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
        fail(key, "is out of range: ", value.dump());
      }
      return static_cast<int64_t>(value.get<uint64_t>());
    }
    if (!value.is_number_integer()) fail(key, "must be an integer, got ", describe_json(value));
    return value.get<int64_t>();
  }

  std::optional<double> optional_number(const char* key) const {
    if (!present(key)) return std::nullopt;
    if (!at(key).is_number()) fail(key, "must be a number, got ", describe_json(at(key)));
    return at(key).get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!present(key)) return fallback;
    if (!at(key).is_boolean()) fail(key, "must be true or false, got ", describe_json(at(key)));
    return at(key).get<bool>();
  }
  std::optional<std::string> optional_string(const char* key) const {
    if (!present(key)) return std::nullopt;
    if (!at(key).is_string()) fail(key, "must be a string, got ", describe_json(at(key)));
    return at(key).get<std::string>();
  }

  // A token id field: null, one id or a list of ids (Hugging Face allows all three).
  std::vector<int32_t> token_ids(const char* key) const {
    std::vector<int32_t> ids;
    if (!present(key)) return ids;
    const nlohmann::json& value = at(key);
    auto add = [&](const nlohmann::json& item) {
      if (!item.is_number_integer()) {
        fail(key, "must be a token id or a list of token ids, got ", describe_json(value));
      }
      const int64_t id = to_int(key, item);
      if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
        fail(key, "holds an invalid token id ", id);
      }
      if (std::find(ids.begin(), ids.end(), id) == ids.end())
        ids.push_back(static_cast<int32_t>(id));
    };
    if (value.is_array()) {
      for (const nlohmann::json& item : value) add(item);
    } else {
      add(value);
    }
    return ids;
  }

 private:
  const nlohmann::json& object_;
  const std::string& source_;
};

// Where config.json describes its RoPE: transformers 5's rope_parameters or 4.x's rope_scaling
// (the one with a type other than "default" when both are there). object is nullptr when
// neither is.
struct RopeScalingField {
  const nlohmann::json* object = nullptr;
  const char* field = nullptr;
  std::string type = "default";
};
RopeScalingField find_rope_scaling(const ConfigFields& fields);

// The sparse-layer fields of the Qwen MoE families: num_experts (or num_local_experts),
// num_experts_per_tok, moe_intermediate_size, norm_topk_prob, decoder_sparse_step,
// mlp_only_layers, and intermediate_size when some layer is dense.
void parse_sparse_moe_fields(const ConfigFields& fields, ModelConfig& config);

}  // namespace tidal
