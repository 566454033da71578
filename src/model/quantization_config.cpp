// quantization_config: the FP8 block-quantized checkpoints, and a clear refusal of the rest.
#include "model/quantization_config.h"

#include "model/config_fields.h"

namespace tidal {

std::optional<Fp8BlockQuantization> parse_quantization_config(const ConfigFields& config) {
  if (!config.present("quantization_config")) return std::nullopt;
  const nlohmann::json& object = config.at("quantization_config");
  const std::string source = cat(config.source(), ": quantization_config");
  if (!object.is_object()) {
    TIDAL_FAIL(source, " must be an object, got ", describe_json(object));
  }
  const ConfigFields fields(object, source);
  const std::optional<std::string> method = fields.optional_string("quant_method");
  if (method != "fp8") {
    fields.fail("quant_method", "is ", method ? cat("'", *method, "'") : std::string("missing"),
                "; tidal loads FP8 block-quantized checkpoints (quant_method 'fp8') and "
                "unquantized ones");
  }
  if (const auto format = fields.optional_string("fmt"); format && *format != "e4m3") {
    fields.fail("fmt", "is '", *format, "'; tidal's FP8 weights are e4m3");
  }
  if (const auto scheme = fields.optional_string("activation_scheme");
      scheme && *scheme != "dynamic") {
    fields.fail("activation_scheme", "is '", *scheme,
                "'; tidal quantizes activations per token at run time ('dynamic') and has no "
                "static activation scales");
  }
  if (!fields.present("weight_block_size")) {
    fields.fail("weight_block_size",
                "is missing; tidal runs block-scaled FP8 (per-tensor or per-channel FP8 "
                "checkpoints are not supported)");
  }
  const nlohmann::json& block = fields.at("weight_block_size");
  if (!block.is_array() || block.size() != 2 || !block[0].is_number_integer() ||
      !block[1].is_number_integer() || block[0].get<int64_t>() <= 0 ||
      block[1].get<int64_t>() <= 0) {
    fields.fail("weight_block_size", "must be two positive integers, got ", describe_json(block));
  }
  Fp8BlockQuantization result{.block_rows = block[0].get<int64_t>(),
                              .block_cols = block[1].get<int64_t>(),
                              .modules_to_not_convert = {}};
  if (fields.present("modules_to_not_convert")) {
    const nlohmann::json& modules = fields.at("modules_to_not_convert");
    if (!modules.is_array()) {
      fields.fail("modules_to_not_convert", "must be a list, got ", describe_json(modules));
    }
    for (const nlohmann::json& module : modules) {
      if (!module.is_string()) {
        fields.fail("modules_to_not_convert", "must list names, got ", describe_json(module));
      }
      result.modules_to_not_convert.push_back(module.get<std::string>());
    }
  }
  return result;
}

}  // namespace tidal
