// FP8 block quantization as FP8 checkpoints declare it in config.json's quantization_config
// (DeepSeek-V3/R1, Kimi K2, Qwen3-*-FP8): float8_e4m3fn weights, a float scale per block of
// weight_block_size, named <weight>_scale_inv (the factor that restores the weight), and
// activations quantized per token at run time ("dynamic").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tidal {

class ConfigFields;

struct Fp8BlockQuantization {
  int64_t block_rows = 128;  // weight_block_size[0]: output features per block
  int64_t block_cols = 128;  // weight_block_size[1]: input features per block
  // Modules the checkpoint left unquantized (Qwen's configs list them; DeepSeek's leave them
  // implicit). Informational: every weight's dtype is read from the checkpoint itself.
  std::vector<std::string> modules_to_not_convert;
};

// Empty without a quantization_config. Throws tidal::Error naming `fields`' source and the field
// for any quantization tidal does not run (another quant_method, static activation scales,
// e5m2, a missing or malformed weight_block_size).
std::optional<Fp8BlockQuantization> parse_quantization_config(const ConfigFields& fields);

}  // namespace tidal
