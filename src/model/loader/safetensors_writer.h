// Writes safetensors files from named tensors: tests build good and bad checkpoints with it, and
// tools write dtype-converted copies of a checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "model/loader/safetensors.h"

namespace tidal {

// `values` stored as `dtype` (F32, F16 or BF16, rounding to nearest even); throws for other dtypes.
std::vector<std::byte> encode_floats(std::span<const float> values, DType dtype);

// The values of a BF16/F16/F32 tensor widened to f32. A copy: for tests and tools, never the
// loading path. Throws naming the tensor and its file for other dtypes.
std::vector<float> decode_floats(const TensorInfo& tensor);
// Elements [first, first + count) only.
std::vector<float> decode_floats(const TensorInfo& tensor, size_t first, size_t count);

// Collects tensors in memory, then writes them in insertion order. The header is padded with
// spaces to a multiple of 8 bytes, as the reference writer does, so the data area stays aligned.
class SafetensorsWriter {
 public:
  // Copies `data`; throws when its size is not dtype size x number of elements, or the name is
  // empty, reserved ("__metadata__") or already added.
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape,
           std::span<const std::byte> data);
  void add_floats(const std::string& name, DType dtype, std::vector<int64_t> shape,
                  std::span<const float> values);
  // Any dtype name with unchecked bytes, for tensors tidal cannot compute with ("F8_E4M3", "I8")
  // and for deliberately inconsistent entries in error tests.
  void add_raw(const std::string& name, const std::string& dtype_name, std::vector<int64_t> shape,
               std::span<const std::byte> data);
  void set_metadata(const std::string& key, const std::string& value);

  // Throws tidal::Error naming `path` when it cannot be written.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    std::string dtype_name;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
  };
  void check_new_name(const std::string& name) const;

  std::vector<Entry> entries_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// Writes every tensor of `checkpoint` into one file at `path`, floating-point tensors converted
// to `dtype` (F32, F16 or BF16) and tensors of other dtypes copied unchanged.
void write_converted_checkpoint(const Checkpoint& checkpoint, DType dtype, const std::string& path);

}  // namespace tidal
