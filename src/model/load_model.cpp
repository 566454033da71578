// load_model: the one entry point from a directory to a ready model.
#include "model/load_model.h"

#include <chrono>

#include "common/logging.h"
#include "model/model_family.h"

namespace tidal {
namespace {

// Refuses, before any weight is read, a checkpoint the backend cannot run as stored: no backend
// quietly widens FP8 weights.
void check_backend_runs(const ModelConfig& config, const Backend& backend,
                        const std::string& source) {
  if (config.fp8 && !backend.runs_fp8_weights()) {
    TIDAL_FAIL(source, ": an FP8 block-quantized checkpoint (quantization_config), which the ",
               backend.name(),
               " backend does not run yet (no FP8 GEMMs); the CPU backend runs it (--device cpu)");
  }
}

std::string describe_weights(const ModelConfig& config) {
  return config.fp8 ? cat(", FP8 weights in blocks of ", config.fp8->block_rows, "x",
                          config.fp8->block_cols)
                    : std::string();
}

}  // namespace

std::unique_ptr<CausalLm> load_model(const std::string& directory, Backend& backend,
                                     ModelShard shard) {
  const auto start = std::chrono::steady_clock::now();
  ModelConfig config = load_model_config(directory);
  check_backend_runs(config, backend, directory);
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
           loaded.vocab_size, describe_weights(loaded), " in ", seconds, " s");
  return model;
}

std::unique_ptr<CausalLm> load_dummy_model(const DummyModelOptions& options, Backend& backend,
                                           ModelShard shard) {
  const auto start = std::chrono::steady_clock::now();
  ModelConfig config = load_dummy_config(options);
  check_backend_runs(config, backend, options.config_file);
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
           describe_weights(made), " in ", seconds, " s");
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
