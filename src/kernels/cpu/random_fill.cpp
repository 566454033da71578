// The uniform fill on the CPU: the same counter-based bits as the CUDA kernel.
#include "kernels/cpu/random_fill.h"

#include <cstring>

#include "common/counter_random.h"
#include "common/error.h"

namespace tidal::cpu {

void random_fill(void* data, DType dtype, int64_t count, uint64_t seed, int64_t first_index,
                 float center, float step) {
  const auto first = static_cast<uint64_t>(first_index);
  for (int64_t i = 0; i < count; ++i) {
    const auto index = static_cast<uint64_t>(i);
    const float value =
        center + static_cast<float>(counter_random::ticks(seed, first + index)) * step;
    switch (dtype) {
      case DType::kF32:
        static_cast<float*>(data)[i] = value;
        break;
      case DType::kBF16:
        static_cast<uint16_t*>(data)[i] = f32_to_bf16(value);
        break;
      case DType::kF16:
        static_cast<uint16_t*>(data)[i] = f32_to_f16(value);
        break;
      case DType::kF8E4M3:
        static_cast<uint8_t*>(data)[i] = f32_to_fp8_e4m3(value);
        break;
      default:
        TIDAL_FAIL("random_fill: dtype ", dtype_name(dtype), " is not F32, F16, BF16 or F8_E4M3");
    }
  }
}

}  // namespace tidal::cpu
