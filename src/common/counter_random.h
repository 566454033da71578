// Counter-based random numbers: the value at index i of a stream depends only on (seed, i), so
// any slice of a tensor can be filled on its own, on any backend, with the same bits. The CPU and
// CUDA fills both use these functions (constexpr, so nvcc compiles them for the device too).
#pragma once

#include <cstdint>

namespace tidal::counter_random {

// splitmix64's finaliser: a bijective mix of 64 bits.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A signed integer in [-2^23, 2^23): 24 random bits. Scaled by a power of two it is an exact
// float, so `center + ticks * step` rounds once (at the add) with or without a fused multiply-add,
// and every compiler and device gets the same value.
constexpr int32_t ticks(uint64_t seed, uint64_t index) {
  const uint64_t bits = mix64(seed + (index + 1) * 0x9e3779b97f4a7c15ull) >> 40;
  return static_cast<int32_t>(bits) - (int32_t{1} << 23);
}

// The uniform behind the Gumbel variate of one id in a sampling draw (kernels/sampling_layout.h):
// a function of (seed, counter, id) only, so the CPU and CUDA draws of a row agree without any
// state carried between steps. The row's part is mixed once (sampling_row_key), then once per id.
constexpr uint64_t sampling_row_key(uint64_t seed, uint64_t counter) {
  return mix64(seed ^ mix64(counter + 0x9e3779b97f4a7c15ull));
}

// (2b + 1) / 2^24 for the 23 high bits b of the id's mix: exact in float (2b + 1 < 2^24, scaled by
// a power of two) and strictly inside (0, 1), from 2^-24 to 1 - 2^-24, so -log(-log(u)) is finite.
// (24 bits would not do: (2^24 - 0.5) / 2^24 rounds to 1 in float.)
constexpr float sampling_uniform_at(uint64_t row_key, int64_t id) {
  const uint64_t bits =
      mix64(row_key + (static_cast<uint64_t>(id) + 1) * 0x9e3779b97f4a7c15ull) >> 41;
  return static_cast<float>(2 * bits + 1) * 0x1p-24f;
}

constexpr float sampling_uniform(uint64_t seed, uint64_t counter, int64_t id) {
  return sampling_uniform_at(sampling_row_key(seed, counter), id);
}

// FNV-1a over a name: a stable per-tensor seed (std::hash may differ between builds).
constexpr uint64_t hash_name(const char* name, uint64_t seed) {
  uint64_t hash = 0xcbf29ce484222325ull ^ mix64(seed);
  for (; *name != '\0'; ++name) {
    hash = (hash ^ static_cast<unsigned char>(*name)) * 0x100000001b3ull;
  }
  return hash;
}

}  // namespace tidal::counter_random
