// load_model: the one entry point from a directory to a ready model.
#include "model/load_model.h"

#include <chrono>

#include "common/logging.h"

namespace tidal {

std::unique_ptr<Qwen3MoeModel> load_model(const std::string& directory, Backend& backend,
                                          ModelShard shard) {
  const auto start = std::chrono::steady_clock::now();
  ModelConfig config = load_model_config(directory);
  Checkpoint checkpoint = Checkpoint::open(directory);
  auto model = std::make_unique<Qwen3MoeModel>(backend, std::move(config), std::move(checkpoint),
                                               std::move(shard));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ModelConfig& loaded = model->config();
  log_info("loaded ", loaded.architecture, " from ", directory, " on ", backend.name(), ": ",
           loaded.num_layers, " layers, ", loaded.num_experts, " experts (top-",
           loaded.num_experts_per_tok, "), hidden ", loaded.hidden_size, ", vocab ",
           loaded.vocab_size, " in ", seconds, " s");
  return model;
}

std::string default_model_directory() {
  return TIDAL_DEFAULT_MODEL_DIR;
}

}  // namespace tidal
