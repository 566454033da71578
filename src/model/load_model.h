// Opening a model directory: config, checkpoint and weights on a backend, with progress logged.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "model/causal_lm.h"
#include "model/dummy_weights.h"

namespace tidal {

// Throws tidal::Error naming the directory or file and what is wrong.
std::unique_ptr<CausalLm> load_model(const std::string& directory, Backend& backend,
                                     ModelShard shard = {});

// A model of a config's shapes with dummy weights made on `backend` (--load-format dummy).
std::unique_ptr<CausalLm> load_dummy_model(const DummyModelOptions& options, Backend& backend,
                                           ModelShard shard = {});

// The model a server or rank runs: `directory`'s checkpoint, or, when `dummy` is set, dummy
// weights of its config (the directory then only provides the tokenizer). Every place that
// serves a model goes through these two, so they cannot disagree on which model it is.
ModelConfig load_model_config(const std::string& directory,
                              const std::optional<DummyModelOptions>& dummy);
std::unique_ptr<CausalLm> load_model(const std::string& directory,
                                     const std::optional<DummyModelOptions>& dummy,
                                     Backend& backend, ModelShard shard = {});

// The bundled tiny model served when no model is named.
std::string default_model_directory();

}  // namespace tidal
