// The GPU op tests' harness: tensors on the host (the CPU reference reads F32) and on the device
// (BF16), poisoned outputs, and reading results back; every buffer lives until the harness goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "common/dtype.h"
#include "common/error.h"

namespace tidal::testing_util {

// The value `value` becomes when stored as `dtype`.
inline float representable(float value, DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return bf16_to_f32(f32_to_bf16(value));
    case DType::kF16:
      return f16_to_f32(f32_to_f16(value));
    default:
      return value;
  }
}

inline std::vector<std::byte> encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kF32:
        std::memcpy(bytes.data() + 4 * i, &values[i], 4);
        break;
      case DType::kBF16: {
        const uint16_t bits = f32_to_bf16(values[i]);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t bits = f32_to_f16(values[i]);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
        break;
      }
      default:
        throw Error("encode: unsupported dtype");
    }
  }
  return bytes;
}

inline std::vector<float> decode(const std::vector<std::byte>& bytes, DType dtype) {
  const size_t count = bytes.size() / dtype_size(dtype);
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&values[i], bytes.data() + 4 * i, 4);
    } else if (dtype == DType::kI32) {
      int32_t value = 0;
      std::memcpy(&value, bytes.data() + 4 * i, 4);
      values[i] = static_cast<float>(value);
    } else {
      uint16_t bits = 0;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      values[i] = dtype == DType::kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
    }
  }
  return values;
}

inline Backend& cuda_backend() {
  static const std::unique_ptr<Backend> backend = make_backend("cuda");
  return *backend;
}

// One case's tensors on both backends; every buffer lives until the harness goes.
class Harness {
 public:
  Backend& gpu() { return cuda_backend(); }
  Backend& cpu() { return cpu_; }

  // Host tensor for the CPU reference, in `dtype` (activations are F32 there).
  Tensor host(const std::vector<float>& values, std::vector<int64_t> shape,
              DType dtype = DType::kF32) {
    host_.push_back(encode(values, dtype));
    return {.data = host_.back().data(), .dtype = dtype, .shape = std::move(shape)};
  }
  Tensor host_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
    host_.emplace_back(values.size() * 4);
    std::memcpy(host_.back().data(), values.data(), values.size() * 4);
    return {.data = host_.back().data(), .dtype = DType::kI32, .shape = std::move(shape)};
  }
  // Host output filled with NaN.
  Tensor host_poisoned(std::vector<int64_t> shape, DType dtype = DType::kF32) {
    Tensor tensor{.data = nullptr, .dtype = dtype, .shape = std::move(shape)};
    host_.emplace_back(tensor.num_bytes(), std::byte{0xff});
    tensor.data = host_.back().data();
    return tensor;
  }

  Tensor device(const std::vector<float>& values, std::vector<int64_t> shape,
                DType dtype = DType::kBF16) {
    return upload(encode(values, dtype), std::move(shape), dtype);
  }
  Tensor device_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
    std::vector<std::byte> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return upload(bytes, std::move(shape), DType::kI32);
  }
  // Device output filled with 0xff bytes: NaN in F32/F16/BF16, -1 in I32.
  Tensor device_poisoned(std::vector<int64_t> shape, DType dtype = DType::kBF16) {
    Tensor tensor{.dtype = dtype, .shape = std::move(shape), .device = DeviceKind::kCuda};
    return upload(std::vector<std::byte>(tensor.num_bytes(), std::byte{0xff}), tensor.shape, dtype);
  }

  std::vector<std::byte> read_bytes(const Tensor& tensor) {
    std::vector<std::byte> bytes(tensor.num_bytes());
    gpu().copy_to_host(bytes.data(), tensor.data, bytes.size());
    return bytes;
  }
  std::vector<float> read(const Tensor& tensor) { return decode(read_bytes(tensor), tensor.dtype); }
  static std::vector<float> read_host(const Tensor& tensor) {
    std::vector<std::byte> bytes(tensor.num_bytes());
    std::memcpy(bytes.data(), tensor.data, bytes.size());
    return decode(bytes, tensor.dtype);
  }

 private:
  Tensor upload(const std::vector<std::byte>& bytes, std::vector<int64_t> shape, DType dtype) {
    buffers_.push_back(gpu().allocate(bytes.size()));
    gpu().copy_from_host(buffers_.back().data(), bytes.data(), bytes.size());
    return {.data = buffers_.back().data(),
            .dtype = dtype,
            .shape = std::move(shape),
            .device = DeviceKind::kCuda};
  }

  CpuBackend cpu_;
  std::deque<std::vector<std::byte>> host_;
  std::vector<DeviceBuffer> buffers_;
};

}  // namespace tidal::testing_util
