// DeepSeek-V2 (DeepseekV2ForCausalLM, V2-Lite included) and DeepSeek-V3 (DeepseekV3ForCausalLM,
// also R1's and Kimi K2's layout): their config fields, weight names and model
// (model/model_family.h).
#pragma once

#include "model/model_family.h"

namespace tidal {

const ModelFamily& deepseek_v2_family();
const ModelFamily& deepseek_v3_family();

}  // namespace tidal
