// Qwen3-MoE (Qwen3MoeForCausalLM): its config fields, weight names and model
// (model/model_family.h).
#pragma once

#include "model/model_family.h"

namespace tidal {

const ModelFamily& qwen3_moe_family();

}  // namespace tidal
