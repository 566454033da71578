// load_model: the one entry point from a directory to a ready model.
#include "model/load_model.h"

#include <chrono>

#include "common/logging.h"
#include "model/model_family.h"

namespace tidal {

std::unique_ptr<CausalLm> load_model(const std::string& directory, Backend& backend,
                                     ModelShard shard) {
  const auto start = std::chrono::steady_clock::now();
  ModelConfig config = load_model_config(directory);
  Checkpoint checkpoint = Checkpoint::open(directory);
  const ModelFamily& family = model_family_of(config);
  auto model =
      family.make_model(backend, std::move(config), std::move(checkpoint), std::move(shard));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ModelConfig& loaded = model->config();
  log_info("loaded ", loaded.architecture, " from ", directory, " on ", backend.name(), ": ",
           loaded.num_layers, " layers, ", loaded.num_experts, " experts (top-",
           loaded.num_experts_per_tok, "), hidden ", loaded.hidden_size, ", vocab ",
           loaded.vocab_size, " in ", seconds, " s");
  return model;
}

std::unique_ptr<CausalLm> load_dummy_model(const DummyModelOptions& options, Backend& backend,
                                           ModelShard shard) {
  const auto start = std::chrono::steady_clock::now();
  ModelConfig config = load_dummy_config(options);
  Checkpoint checkpoint = dummy_checkpoint(config, options.seed);
  const ModelFamily& family = model_family_of(config);
  auto model =
      family.make_model(backend, std::move(config), std::move(checkpoint), std::move(shard));
  backend.synchronize();  // the fills are queued: count their time
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ModelConfig& made = model->config();
  log_info("made dummy weights (seed ", options.seed, ") of ", options.config_file, " on ",
           backend.name(), ": ", made.num_layers, " layers, ", made.num_experts, " experts (top-",
           made.num_experts_per_tok, "), hidden ", made.hidden_size, ", vocab ", made.vocab_size,
           " in ", seconds, " s");
  return model;
}

ModelConfig load_model_config(const std::string& directory,
                              const std::optional<DummyModelOptions>& dummy) {
  return dummy ? load_dummy_config(*dummy) : load_model_config(directory);
}

std::unique_ptr<CausalLm> load_model(const std::string& directory,
                                     const std::optional<DummyModelOptions>& dummy,
                                     Backend& backend, ModelShard shard) {
  return dummy ? load_dummy_model(*dummy, backend, std::move(shard))
               : load_model(directory, backend, std::move(shard));
}

std::string default_model_directory() {
  return TIDAL_DEFAULT_MODEL_DIR;
}

}  // namespace tidal
