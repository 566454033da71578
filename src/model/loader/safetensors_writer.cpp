// Safetensors writing and the float conversions that tests and checkpoint tools share.
#include "model/loader/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace tidal {
namespace {

bool is_float_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (const int64_t extent : shape) {
    TIDAL_CHECK(extent >= 0, "negative extent in shape");
    count *= extent;
  }
  return count;
}

}  // namespace

std::vector<std::byte> encode_floats(std::span<const float> values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
  switch (dtype) {
    case DType::kF32:
      if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
      break;
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t bits = dtype == DType::kF16 ? f32_to_f16(values[i]) : f32_to_bf16(values[i]);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
      }
      break;
    case DType::kF8E4M3:
      for (size_t i = 0; i < values.size(); ++i) {
        bytes[i] = static_cast<std::byte>(f32_to_fp8_e4m3(values[i]));
      }
      break;
    default:
      TIDAL_FAIL("encode_floats: cannot store floats as ", dtype_name(dtype));
  }
  return bytes;
}

std::vector<float> decode_floats(const TensorInfo& tensor) {
  const size_t width = tensor.dtype ? dtype_size(*tensor.dtype) : 1;
  return decode_floats(tensor, 0, tensor.data.size() / width);
}

std::vector<float> decode_floats(const TensorInfo& tensor, size_t first, size_t count) {
  if (!tensor.dtype || !is_float_dtype(*tensor.dtype)) {
    TIDAL_FAIL(tensor.file, ": tensor '", tensor.name, "' has dtype ", tensor.dtype_name,
               ", not BF16, F16 or F32");
  }
  const size_t width = dtype_size(*tensor.dtype);
  TIDAL_CHECK((first + count) * width <= tensor.data.size(), "decode_floats out of bounds");
  std::vector<float> values(count);
  // memcpy per element: tensor data inside a mapping need not be aligned for uint16_t/float.
  for (size_t i = 0; i < values.size(); ++i) {
    const std::byte* source = tensor.data.data() + (first + i) * width;
    if (*tensor.dtype == DType::kF32) {
      std::memcpy(&values[i], source, 4);
    } else {
      uint16_t bits = 0;
      std::memcpy(&bits, source, 2);
      values[i] = *tensor.dtype == DType::kF16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
  }
  return values;
}

void SafetensorsWriter::check_new_name(const std::string& name) const {
  TIDAL_CHECK(!name.empty() && name != "__metadata__", "invalid tensor name '", name, "'");
  TIDAL_CHECK(std::none_of(entries_.begin(), entries_.end(),
                           [&name](const Entry& entry) { return entry.name == name; }),
              "tensor '", name, "' added twice");
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::span<const std::byte> data) {
  const int64_t count = element_count(shape);
  TIDAL_CHECK(data.size() == static_cast<size_t>(count) * dtype_size(dtype), "tensor '", name,
              "': ", data.size(), " bytes do not hold ", count, " ", dtype_name(dtype),
              " elements");
  add_raw(name, std::string(dtype_name(dtype)), std::move(shape), data);
}

void SafetensorsWriter::add_floats(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                   std::span<const float> values) {
  TIDAL_CHECK(values.size() == static_cast<size_t>(element_count(shape)), "tensor '", name,
              "': ", values.size(), " values for ", element_count(shape), " elements");
  add(name, dtype, std::move(shape), encode_floats(values, dtype));
}

void SafetensorsWriter::add_raw(const std::string& name, const std::string& dtype_name,
                                std::vector<int64_t> shape, std::span<const std::byte> data) {
  check_new_name(name);
  entries_.push_back(
      Entry{name, dtype_name, std::move(shape), std::vector<std::byte>(data.begin(), data.end())});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  for (auto& [existing, text] : metadata_) {
    if (existing == key) {
      text = value;
      return;
    }
  }
  metadata_.emplace_back(key, value);
}

void SafetensorsWriter::write(const std::string& path) const {
  // ordered_json keeps insertion order, so the header lists tensors in data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    auto& metadata = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata_) metadata[key] = value;
  }
  uint64_t offset = 0;
  for (const Entry& entry : entries_) {
    header[entry.name] = {{"dtype", entry.dtype_name},
                          {"shape", entry.shape},
                          {"data_offsets", {offset, offset + entry.data.size()}}};
    offset += entry.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) TIDAL_FAIL(path, ": cannot create: ", std::strerror(errno));
  std::byte length[8];
  for (size_t i = 0; i < 8; ++i) {
    length[i] = static_cast<std::byte>((uint64_t{text.size()} >> (8 * i)) & 0xffu);
  }
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const Entry& entry : entries_) {
    out.write(reinterpret_cast<const char*>(entry.data.data()),
              static_cast<std::streamsize>(entry.data.size()));
  }
  out.close();
  if (!out) TIDAL_FAIL(path, ": write failed: ", std::strerror(errno));
}

void write_converted_checkpoint(const Checkpoint& checkpoint, DType dtype,
                                const std::string& path) {
  TIDAL_CHECK(is_float_dtype(dtype), "cannot convert a checkpoint to ", dtype_name(dtype));
  SafetensorsWriter writer;
  // Hugging Face loaders refuse safetensors without format metadata.
  writer.set_metadata("format", "pt");
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& info = *checkpoint.find(name);
    if (info.dtype && is_float_dtype(*info.dtype)) {
      writer.add_floats(name, dtype, info.shape, decode_floats(info));
    } else {
      writer.add_raw(name, info.dtype_name, info.shape, info.data);
    }
  }
  writer.write(path);
}

}  // namespace tidal
