// The model families tidal serves, chosen by config.json's `architectures` (or `model_type`).
// Adding a family is a folder under src/model/arch/ that defines its ModelFamily, plus its line in
// model_family.cpp's table.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/causal_lm.h"
#include "model/config_fields.h"
#include "model/loader/safetensors.h"

namespace tidal {

struct ModelFamily {
  std::string_view architecture;  // e.g. "Qwen3MoeForCausalLM"
  std::string_view model_type;    // e.g. "qwen3_moe"
  // Reads the family's own fields of config.json into `config`, after the common ones; throws
  // tidal::Error naming the field on anything it cannot serve.
  void (*parse_config)(const ConfigFields& fields, ModelConfig& config);
  // Loads every weight from `checkpoint` onto `backend`; throws tidal::Error naming the tensor
  // and file on any missing or mis-shaped weight.
  std::unique_ptr<CausalLm> (*make_model)(Backend& backend, ModelConfig config,
                                          Checkpoint checkpoint, ModelShard shard);
  // Every tensor make_model loads for `config`, for dummy weights.
  std::vector<SyntheticTensor> (*checkpoint_tensors)(const ModelConfig& config);
};

// nullptr when no family has that architecture (or model_type).
const ModelFamily* find_model_family(std::string_view architecture);
const ModelFamily* find_model_family_by_type(std::string_view model_type);
// The family of a parsed config; throws tidal::Error when there is none.
const ModelFamily& model_family_of(const ModelConfig& config);
// "A, B and C", for error messages.
std::string supported_architectures();

}  // namespace tidal
