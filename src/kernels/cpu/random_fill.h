// CPU reference of the reproducible uniform fill (dummy weights, benchmark inputs).
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace tidal::cpu {

// data[i] = center + ticks(seed, first_index + i) * step for i in [0, count), stored as `dtype`
// (F32, F16 or BF16, rounded to nearest even). `step` must be a power of two.
void random_fill(void* data, DType dtype, int64_t count, uint64_t seed, int64_t first_index,
                 float center, float step);

}  // namespace tidal::cpu
