// f32 -> f16 and f32 -> fp8 with round to nearest even (the rarer direction, kept out of line).
#include "common/dtype.h"

#include <algorithm>
#include <cmath>

namespace tidal {

uint16_t f32_to_f16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const float magnitude = std::fabs(value);
  if (std::isnan(value)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (magnitude >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (magnitude < 6.103515625e-05f) {
    // Subnormal range: quantise to multiples of 2^-24 with round-half-even.
    const float scaled = magnitude * 16777216.0f;
    const auto rounded = static_cast<uint16_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | rounded);
  }
  uint32_t exponent = ((bits >> 23) & 0xffu) - 112u;
  uint32_t mantissa = bits & 0x7fffffu;
  const uint32_t round_bits = mantissa & 0x1fffu;
  mantissa >>= 13;
  if (round_bits > 0x1000u || (round_bits == 0x1000u && (mantissa & 1u))) {
    ++mantissa;
    if (mantissa == 0x400u) {
      mantissa = 0;
      ++exponent;
    }
  }
  return static_cast<uint16_t>(sign | (exponent << 10) | mantissa);
}

uint8_t f32_to_fp8_e4m3(float value) {
  const auto sign = static_cast<uint8_t>((std::bit_cast<uint32_t>(value) >> 24) & 0x80u);
  if (std::isnan(value)) return static_cast<uint8_t>(sign | 0x7fu);
  const float magnitude = std::min(std::fabs(value), 448.0f);
  if (magnitude < 0.015625f) {
    // Subnormal range (below 2^-6): multiples of 2^-9, half to even (nearbyint's default mode).
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(magnitude * 512.0f)));
  }
  int exponent = 0;
  const float fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^exponent
  // 1.mmm * 2^(exponent - 1): four mantissa steps per octave, rounded half to even; a carry into
  // the next octave (1.111 rounding up) lands on the right encoding by adding.
  const auto steps = static_cast<uint32_t>(std::nearbyint((fraction * 2.0f - 1.0f) * 8.0f));
  const uint32_t encoded = (static_cast<uint32_t>(exponent - 1 + 7) << 3) + steps;
  return static_cast<uint8_t>(sign | std::min<uint32_t>(encoded, 0x7eu));
}

}  // namespace tidal
