// YaRN's frequencies and magnitude corrections.
#include "model/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace tidal {
namespace {

// The rotary dimension whose wavelength fits `rotations` times in the pretrained context.
double correction_dim(double rotations, int64_t dim, double theta, int64_t max_positions) {
  return static_cast<double>(dim) *
         std::log(static_cast<double>(max_positions) / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(theta));
}

}  // namespace

double yarn_mscale(double factor, double m) {
  return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0;
}

std::vector<float> yarn_inv_freq(int64_t dim, double theta, const YarnParameters& yarn) {
  const int64_t half = dim / 2;
  // Dimensions below `low` keep their pretrained frequency (extrapolate), those above `high` are
  // stretched by the factor (interpolate), and a linear ramp blends the ones between.
  double low =
      std::floor(correction_dim(yarn.beta_fast, dim, theta, yarn.original_max_position_embeddings));
  double high =
      std::ceil(correction_dim(yarn.beta_slow, dim, theta, yarn.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // no zero-width ramp
  const auto low_f = static_cast<float>(low);
  const auto high_f = static_cast<float>(high);
  const auto factor = static_cast<float>(yarn.factor);
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float base_freq =
        std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolated = 1.0f / base_freq;
    const float interpolated = 1.0f / (factor * base_freq);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / (high_f - low_f), 0.0f, 1.0f);
    const float keep = 1.0f - ramp;  // the share of the pretrained frequency
    inv_freq[static_cast<size_t>(i)] = interpolated * (1.0f - keep) + extrapolated * keep;
  }
  return inv_freq;
}

std::vector<float> default_inv_freq(int64_t dim, double theta) {
  std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    inv_freq[static_cast<size_t>(i)] =
        1.0f /
        std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(dim));
  }
  return inv_freq;
}

double yarn_attention_factor(const YarnParameters& yarn) {
  if (yarn.mscale != 0.0 && yarn.mscale_all_dim != 0.0) {
    return yarn_mscale(yarn.factor, yarn.mscale) / yarn_mscale(yarn.factor, yarn.mscale_all_dim);
  }
  return yarn_mscale(yarn.factor, 1.0);
}

}  // namespace tidal
