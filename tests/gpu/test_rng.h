// Reproducible random inputs for the GPU op tests: splitmix64, fast enough to fill a gigabyte of
// expert weights in seconds.
#pragma once

#include <cmath>
#include <cstdint>

namespace tidal::testing_util {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // In [0, 1), 53 bits.
  double unit() { return static_cast<double>(next() >> 11) * 0x1p-53; }
  // In [lo, hi), from 24 bits (exact in float before the scaling).
  float uniform(float lo, float hi) {
    const float unit24 = static_cast<float>(next() >> 40) / static_cast<float>(1ull << 24);
    return lo + (hi - lo) * unit24;
  }
  // Standard normal (Box-Muller).
  float normal() {
    return static_cast<float>(std::sqrt(-2 * std::log1p(-unit())) *
                              std::cos(6.283185307179586 * unit()));
  }
  int32_t below(int64_t bound) {
    return static_cast<int32_t>(next() % static_cast<uint64_t>(bound));
  }

 private:
  uint64_t state_;
};

}  // namespace tidal::testing_util
