// Parses Hugging Face config.json (transformers 4.x and 5.x spellings) into a validated
// ModelConfig, so that later code never meets a missing, mistyped or unsupported field.
#include "model/model_config.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>

#include "common/error.h"
#include "common/mapped_file.h"
#include "model/config_fields.h"
#include "model/model_family.h"

namespace tidal {
namespace {

using nlohmann::json;

double parse_rope_theta(const ConfigFields& fields, const std::string& source) {
  std::optional<double> theta;
  if (fields.present("rope_parameters")) {
    const json& parameters = fields.at("rope_parameters");
    if (!parameters.is_object()) {
      fields.fail("rope_parameters", "must be an object, got ", describe_json(parameters));
    }
    const std::string nested_source = cat(source, " (rope_parameters)");
    theta = ConfigFields(parameters, nested_source).optional_number("rope_theta");
  }
  if (fields.present("rope_scaling") && !fields.at("rope_scaling").is_object()) {
    fields.fail("rope_scaling", "must be an object, got ",
                describe_json(fields.at("rope_scaling")));
  }
  if (!theta) theta = fields.optional_number("rope_theta");
  // No silent default: Qwen3 uses 1e6, and a wrong base corrupts every position.
  if (!theta)
    TIDAL_FAIL(source, ": missing required field 'rope_theta' (or rope_parameters.rope_theta)");
  if (!(*theta > 0)) fields.fail("rope_theta", "must be positive, got ", *theta);
  return *theta;
}

DType parse_dtype(const ConfigFields& fields, const std::string& source) {
  std::optional<DType> result;
  // transformers 5.x writes "dtype"; 4.x wrote "torch_dtype".
  for (const char* key : {"dtype", "torch_dtype"}) {
    const auto name = fields.optional_string(key);
    if (!name) continue;
    DType dtype = DType::kBF16;
    if (*name == "bfloat16") {
      dtype = DType::kBF16;
    } else if (*name == "float16") {
      dtype = DType::kF16;
    } else if (*name == "float32") {
      dtype = DType::kF32;
    } else {
      fields.fail(key, "has unsupported value '", *name,
                  "' (tidal supports bfloat16, float16, float32)");
    }
    if (result && *result != dtype) {
      TIDAL_FAIL(source, ": fields 'dtype' and 'torch_dtype' disagree");
    }
    result = dtype;
  }
  return result.value_or(DType::kBF16);
}

}  // namespace

RopeScalingField find_rope_scaling(const ConfigFields& fields) {
  RopeScalingField found;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!fields.present(key) || !fields.at(key).is_object()) continue;
    const json& object = fields.at(key);
    std::string type = "default";
    // transformers 4.x wrote "type", later versions "rope_type".
    for (const char* type_key : {"rope_type", "type"}) {
      if (object.contains(type_key) && object[type_key].is_string()) {
        type = object[type_key].get<std::string>();
        break;
      }
    }
    if (type == "default" && found.object != nullptr) continue;
    found = {.object = &object, .field = key, .type = type};
    if (type != "default") break;
  }
  return found;
}

bool ModelConfig::is_moe_layer(int64_t layer) const {
  const bool dense_only =
      std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end();
  // A hand-built config may leave decoder_sparse_step at 0; treat it as "no sparse layers"
  // rather than dividing by zero.
  return !dense_only && num_experts > 0 && decoder_sparse_step > 0 &&
         (layer + 1) % decoder_sparse_step == 0;
}

void parse_sparse_moe_fields(const ConfigFields& fields, ModelConfig& result) {
  const std::string& source = fields.source();
  // transformers 4.x: num_experts; 5.x: num_local_experts.
  const auto experts = fields.optional_int("num_experts");
  const auto local_experts = fields.optional_int("num_local_experts");
  if (experts && local_experts && *experts != *local_experts) {
    TIDAL_FAIL(source, ": num_experts (", *experts, ") and num_local_experts (", *local_experts,
               ") disagree");
  }
  if (!experts && !local_experts) {
    TIDAL_FAIL(source, ": missing required field 'num_experts' (or 'num_local_experts')");
  }
  result.num_experts = experts ? *experts : *local_experts;
  if (result.num_experts < 0) {
    fields.fail(experts ? "num_experts" : "num_local_experts", "must not be negative, got ",
                result.num_experts);
  }
  if (result.num_experts > 0) {
    result.num_experts_per_tok = fields.required_positive("num_experts_per_tok");
    if (result.num_experts_per_tok > result.num_experts) {
      TIDAL_FAIL(source, ": num_experts_per_tok (", result.num_experts_per_tok,
                 ") exceeds the number of experts (", result.num_experts, ")");
    }
    result.moe_intermediate_size = fields.required_positive("moe_intermediate_size");
  } else {
    result.num_experts_per_tok = fields.optional_int("num_experts_per_tok").value_or(0);
    result.moe_intermediate_size = fields.optional_int("moe_intermediate_size").value_or(0);
  }
  result.norm_topk_prob = fields.boolean("norm_topk_prob", false);

  result.decoder_sparse_step = fields.optional_int("decoder_sparse_step").value_or(1);
  if (result.decoder_sparse_step <= 0) {
    fields.fail("decoder_sparse_step", "must be positive, got ", result.decoder_sparse_step);
  }
  if (fields.present("mlp_only_layers")) {
    const json& layers = fields.at("mlp_only_layers");
    if (!layers.is_array()) {
      fields.fail("mlp_only_layers", "must be a list of layer indices, got ",
                  describe_json(layers));
    }
    for (const json& item : layers) {
      const int64_t layer = fields.to_int("mlp_only_layers", item);
      if (layer < 0 || layer >= result.num_layers) {
        fields.fail("mlp_only_layers", "names layer ", layer, ", but the model has ",
                    result.num_layers, " layers");
      }
      result.mlp_only_layers.push_back(layer);
    }
  }
  // Dense layers need intermediate_size; an all-MoE model may leave it out.
  bool has_dense_layer = false;
  for (int64_t layer = 0; layer < result.num_layers; ++layer) {
    has_dense_layer = has_dense_layer || !result.is_moe_layer(layer);
  }
  if (has_dense_layer) {
    result.intermediate_size = fields.required_positive("intermediate_size");
  } else {
    result.intermediate_size = fields.optional_int("intermediate_size").value_or(0);
  }
}

ModelConfig parse_model_config(const json& config, const std::string& source) {
  if (!config.is_object())
    TIDAL_FAIL(source, ": config is a ", config.type_name(), ", not an object");
  const ConfigFields fields(config, source);
  ModelConfig result;

  const auto model_type = fields.optional_string("model_type");
  const ModelFamily* family = nullptr;
  if (fields.present("architectures")) {
    const json& architectures = fields.at("architectures");
    if (!architectures.is_array() || architectures.empty() || !architectures[0].is_string()) {
      fields.fail("architectures", "must be a list of class names, got ",
                  describe_json(architectures));
    }
    result.architecture = architectures[0].get<std::string>();
    family = find_model_family(result.architecture);
    if (family == nullptr) {
      TIDAL_FAIL(source, ": unsupported architecture '", result.architecture, "' (tidal supports ",
                 supported_architectures(), ")");
    }
  } else if (model_type && (family = find_model_family_by_type(*model_type)) != nullptr) {
    // Hand-written configs sometimes give only model_type.
    result.architecture = std::string(family->architecture);
  } else {
    TIDAL_FAIL(source, ": missing required field 'architectures'");
  }
  if (model_type && *model_type != family->model_type) {
    fields.fail("model_type", "is '", *model_type, "', but ", family->architecture, " needs '",
                family->model_type, "'");
  }
  result.model_type = std::string(family->model_type);

  result.vocab_size = fields.required_positive("vocab_size");
  result.hidden_size = fields.required_positive("hidden_size");
  result.num_layers = fields.required_positive("num_hidden_layers");
  result.num_heads = fields.required_positive("num_attention_heads");
  result.num_kv_heads = fields.optional_int("num_key_value_heads").value_or(result.num_heads);
  if (result.num_kv_heads <= 0) {
    fields.fail("num_key_value_heads", "must be positive, got ", result.num_kv_heads);
  }
  if (result.num_heads % result.num_kv_heads != 0) {
    TIDAL_FAIL(source, ": num_attention_heads (", result.num_heads,
               ") is not a multiple of num_key_value_heads (", result.num_kv_heads, ")");
  }
  if (const auto head_dim = fields.optional_int("head_dim")) {
    if (*head_dim <= 0) fields.fail("head_dim", "must be positive, got ", *head_dim);
    result.head_dim = *head_dim;
  } else {
    if (result.hidden_size % result.num_heads != 0) {
      TIDAL_FAIL(source, ": no head_dim, and hidden_size (", result.hidden_size,
                 ") is not a multiple of num_attention_heads (", result.num_heads, ")");
    }
    result.head_dim = result.hidden_size / result.num_heads;
  }
  result.max_position_embeddings = fields.required_positive("max_position_embeddings");

  if (const auto eps = fields.optional_number("rms_norm_eps")) {
    if (!(*eps > 0)) fields.fail("rms_norm_eps", "must be positive, got ", *eps);
    result.rms_norm_eps = static_cast<float>(*eps);
  }
  result.rope_theta = parse_rope_theta(fields, source);

  if (const auto act = fields.optional_string("hidden_act"); act && *act != "silu") {
    fields.fail("hidden_act", "is '", *act, "'; tidal supports only 'silu'");
  }
  if (fields.boolean("use_sliding_window", false)) {
    fields.fail("use_sliding_window", "is true; tidal does not support sliding-window attention");
  }
  result.tie_word_embeddings = fields.boolean("tie_word_embeddings", false);
  result.attention_bias = fields.boolean("attention_bias", false);
  result.dtype = parse_dtype(fields, source);
  result.fp8 = parse_quantization_config(fields);

  result.eos_token_ids = fields.token_ids("eos_token_id");
  if (const auto bos = fields.token_ids("bos_token_id"); !bos.empty()) result.bos_token_id = bos[0];
  result.kv_cache = {.key_heads = result.num_kv_heads,
                     .key_dim = result.head_dim,
                     .value_heads = result.num_kv_heads,
                     .value_dim = result.head_dim};
  family->parse_config(fields, result);
  // A scaled RoPE is the family's to read (DeepSeek's YaRN); any other family refuses it here
  // rather than serving every position wrong.
  const RopeScalingField rope = find_rope_scaling(fields);
  if (rope.type != "default" && result.rope_inv_freq.empty()) {
    TIDAL_FAIL(source, ": field '", rope.field, "' has rope type '", rope.type, "', which ",
               result.architecture, " in tidal does not support (only default RoPE)");
  }
  return result;
}

ModelConfig load_model_config(const std::string& directory) {
  namespace fs = std::filesystem;
  auto read_json = [](const std::string& path) {
    try {
      return json::parse(read_text_file(path));
    } catch (const json::parse_error& error) {
      TIDAL_FAIL(path, ": corrupt JSON (", error.what(), ")");
    }
  };

  const std::string config_path = (fs::path(directory) / "config.json").string();
  std::error_code error;
  if (!fs::is_regular_file(config_path, error)) {
    TIDAL_FAIL(config_path, ": not found (a model directory needs config.json)");
  }
  ModelConfig config = parse_model_config(read_json(config_path), config_path);

  // generation_config.json often lists more stop tokens (e.g. <|im_end|> besides <|endoftext|>).
  const std::string generation_path = (fs::path(directory) / "generation_config.json").string();
  if (fs::is_regular_file(generation_path, error)) {
    const json generation = read_json(generation_path);
    if (!generation.is_object()) {
      TIDAL_FAIL(generation_path, ": a ", generation.type_name(), ", not an object");
    }
    const ConfigFields fields(generation, generation_path);
    for (const int32_t id : fields.token_ids("eos_token_id")) {
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
          config.eos_token_ids.end()) {
        config.eos_token_ids.push_back(id);
      }
    }
    if (config.bos_token_id < 0) {
      if (const auto bos = fields.token_ids("bos_token_id"); !bos.empty()) {
        config.bos_token_id = bos[0];
      }
    }
  }
  return config;
}

}  // namespace tidal
