// YaRN, the RoPE scaling DeepSeek-V2/V3 ship with: inverse frequencies blended between the
// pretrained ones and ones stretched by `factor`, and the magnitude corrections it brings (on cos
// and sin, and on the softmax scale). Computed as transformers computes them, in f32.
#pragma once

#include <cstdint>
#include <vector>

namespace tidal {

struct YarnParameters {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: absent
  double mscale_all_dim = 0.0;  // 0: absent
};

// 0.1 * m * ln(factor) + 1, or 1 when factor <= 1: YaRN's magnitude correction.
double yarn_mscale(double factor, double m);

// The inverse frequencies of a rotary dimension `dim` (dim / 2 of them) for base `theta`.
std::vector<float> yarn_inv_freq(int64_t dim, double theta, const YarnParameters& yarn);

// Plain RoPE's inverse frequencies 1 / theta^(2i / dim), in f32 as transformers computes them.
std::vector<float> default_inv_freq(int64_t dim, double theta);

// What cos and sin are scaled by: mscale(factor, mscale) / mscale(factor, mscale_all_dim) when
// both are given, else mscale(factor, 1).
double yarn_attention_factor(const YarnParameters& yarn);

}  // namespace tidal
