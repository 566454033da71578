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

// FNV-1a over a name: a stable per-tensor seed (std::hash may differ between builds).
constexpr uint64_t hash_name(const char* name, uint64_t seed) {
  uint64_t hash = 0xcbf29ce484222325ull ^ mix64(seed);
  for (; *name != '\0'; ++name) {
    hash = (hash ^ static_cast<unsigned char>(*name)) * 0x100000001b3ull;
  }
  return hash;
}

}  // namespace tidal::counter_random
