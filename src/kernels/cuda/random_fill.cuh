// The reproducible uniform fill on the GPU (dummy weights, benchmark inputs): bit for bit the CPU
// reference's values, from common/counter_random.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/element.cuh"

namespace tidal::cuda {

// data[i] = center + ticks(seed, first_index + i) * step, stored as `type` (round to nearest
// even). `step` is a power of two, so the product is exact and the sum rounds once.
cudaError_t random_fill(void* data, ElementType type, int64_t count, uint64_t seed,
                        int64_t first_index, float center, float step, cudaStream_t stream);

}  // namespace tidal::cuda
