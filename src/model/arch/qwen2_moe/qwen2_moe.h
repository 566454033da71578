// Qwen2-MoE (Qwen2MoeForCausalLM): its config fields, weight names and model
// (model/model_family.h).
#pragma once

#include "model/model_family.h"

namespace tidal {

const ModelFamily& qwen2_moe_family();

}  // namespace tidal
