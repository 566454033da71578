// The table of model families.
#include "model/model_family.h"

#include <array>

#include "model/arch/deepseek/deepseek.h"
#include "model/arch/mixtral/mixtral.h"
#include "model/arch/qwen2_moe/qwen2_moe.h"
#include "model/arch/qwen3_moe/qwen3_moe.h"

namespace tidal {
namespace {

const std::array<const ModelFamily*, 5>& families() {
  static const std::array<const ModelFamily*, 5> table = {&qwen3_moe_family(), &qwen2_moe_family(),
                                                          &mixtral_family(), &deepseek_v2_family(),
                                                          &deepseek_v3_family()};
  return table;
}

}  // namespace

const ModelFamily* find_model_family(std::string_view architecture) {
  for (const ModelFamily* family : families()) {
    if (family->architecture == architecture) return family;
  }
  return nullptr;
}

const ModelFamily* find_model_family_by_type(std::string_view model_type) {
  for (const ModelFamily* family : families()) {
    if (family->model_type == model_type) return family;
  }
  return nullptr;
}

const ModelFamily& model_family_of(const ModelConfig& config) {
  const ModelFamily* family = find_model_family(config.architecture);
  TIDAL_CHECK(family != nullptr, "no model family for architecture '", config.architecture,
              "' (tidal supports ", supported_architectures(), ")");
  return *family;
}

std::string supported_architectures() {
  std::string names;
  const auto& table = families();
  for (size_t i = 0; i < table.size(); ++i) {
    if (i > 0) names += i + 1 == table.size() ? " and " : ", ";
    names += table[i]->architecture;
  }
  return names;
}

}  // namespace tidal
