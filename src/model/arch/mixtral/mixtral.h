// Mixtral (MixtralForCausalLM): its config fields, weight names and model (model/model_family.h).
#pragma once

#include "model/model_family.h"

namespace tidal {

const ModelFamily& mixtral_family();

}  // namespace tidal
