// The hash behind expert-parallel replica choice, alone so that device code includes it too.
#pragma once

#include <cstdint>

namespace tidal::eplb {

// The hash behind replica choice. The device kernel must compute exactly this (32-bit unsigned
// arithmetic, wrapping): a hash rather than token_idx mod k so that tokens that pick the same
// expert spread evenly even when their indices share structure (every other token, say).
constexpr uint32_t replica_hash(uint32_t token_idx, uint32_t logical_id) {
  uint32_t hash = token_idx * 0x9E3779B1u + logical_id * 0x85EBCA77u;
  hash ^= hash >> 16;
  hash *= 0x7FEB352Du;
  hash ^= hash >> 15;
  hash *= 0x846CA68Bu;
  hash ^= hash >> 16;
  return hash;
}

}  // namespace tidal::eplb
