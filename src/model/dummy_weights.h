// Dummy weights: a checkpoint of a config's family and shapes whose values are made on the device
// (deterministic, small) instead of read from files, for benchmarks at real model sizes.
#pragma once

#include <cstdint>
#include <string>

#include "model/loader/safetensors.h"
#include "model/model_config.h"

namespace tidal {

struct DummyModelOptions {
  std::string config_file;  // a Hugging Face config.json
  int64_t num_layers = 0;   // 0: the config's; fewer keeps a large model within one device
  uint64_t seed = 0;
};

// The config of `options.config_file`, cut to options.num_layers; throws tidal::Error naming the
// file when it is unreadable or num_layers is outside [1, the config's].
ModelConfig load_dummy_config(const DummyModelOptions& options);

// Every tensor the config's family loads (routed experts in the fused layout), in the config's
// dtype, as a synthetic checkpoint.
Checkpoint dummy_checkpoint(const ModelConfig& config, uint64_t seed);

}  // namespace tidal
