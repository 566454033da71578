// Dummy weights: the config of a file, and the tensor list its family loads.
#include "model/dummy_weights.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/mapped_file.h"
#include "model/model_family.h"

namespace tidal {

ModelConfig load_dummy_config(const DummyModelOptions& options) {
  TIDAL_CHECK(!options.config_file.empty(), "dummy weights need a config.json (--config FILE)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_text_file(options.config_file));
  } catch (const nlohmann::json::parse_error& error) {
    TIDAL_FAIL(options.config_file, ": not valid JSON (", error.what(), ")");
  }
  ModelConfig config = parse_model_config(json, options.config_file);
  if (options.num_layers != 0) {
    TIDAL_CHECK(options.num_layers > 0 && options.num_layers <= config.num_layers,
                options.config_file, ": --num-layers ", options.num_layers, " outside [1, ",
                config.num_layers, "]");
    config.num_layers = options.num_layers;
  }
  return config;
}

Checkpoint dummy_checkpoint(const ModelConfig& config, uint64_t seed) {
  return Checkpoint::synthetic(model_family_of(config).checkpoint_tensors(config), seed);
}

}  // namespace tidal
