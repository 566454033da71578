// Parses and validates safetensors headers over a memory mapping, and resolves tensor names
// across the shards of a checkpoint directory.
#include "model/loader/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace tidal {
namespace {

namespace fs = std::filesystem;

// Bits per element of every dtype the format defines, so that files holding tensors tidal does
// not compute with (FP8 scales, integer buffers) still get their offsets checked.
int dtype_bits(const std::string& name) {
  static const std::map<std::string, int> kBits = {
      {"BOOL", 8},    {"U8", 8},   {"I8", 8},      {"F8_E4M3", 8}, {"F8_E5M2", 8},
      {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16},    {"F16", 16},    {"BF16", 16},
      {"I32", 32},    {"U32", 32}, {"F32", 32},    {"I64", 64},    {"U64", 64},
      {"F64", 64},    {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"C64", 64},
  };
  const auto found = kBits.find(name);
  return found == kBits.end() ? 0 : found->second;
}

// tidal computes only with these; everything else is recorded but refused on access.
std::optional<DType> supported_dtype(const std::string& name) {
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F32") return DType::kF32;
  if (name == "F8_E4M3") return DType::kF8E4M3;  // weights of FP8 checkpoints, with their scales
  return std::nullopt;
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += cat(i == 0 ? "" : ", ", shape[i]);
  return text + "]";
}

uint64_t read_u64_le(const std::byte* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | std::to_integer<uint64_t>(bytes[i]);
  return value;
}

// A non-negative JSON integer; floats and negative numbers are rejected because they would
// silently truncate into a wrong offset or extent.
bool as_u64(const nlohmann::json& value, uint64_t& out) {
  if (value.is_number_unsigned()) {
    out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

TensorInfo parse_entry(const std::string& path, const std::string& name,
                       const nlohmann::json& entry, std::span<const std::byte> data_area) {
  const std::string where = cat(path, ": tensor '", name, "'");
  if (!entry.is_object())
    TIDAL_FAIL(where, ": header entry is a ", entry.type_name(), ", not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) TIDAL_FAIL(where, ": header entry has no '", field, "'");
  }

  TensorInfo info;
  info.name = name;
  info.file = path;
  const auto& dtype = entry["dtype"];
  if (!dtype.is_string()) TIDAL_FAIL(where, ": 'dtype' is a ", dtype.type_name(), ", not a string");
  info.dtype_name = dtype.get<std::string>();
  info.dtype = supported_dtype(info.dtype_name);

  const auto& shape = entry["shape"];
  if (!shape.is_array()) TIDAL_FAIL(where, ": 'shape' is a ", shape.type_name(), ", not an array");
  // Bounding the element count by the data area keeps the product from overflowing; a tensor can
  // never have more elements than bits in the file (zero-size tensors aside).
  const uint64_t element_limit = (uint64_t{data_area.size()} + 1) * 8;
  uint64_t elements = 1;
  bool empty = false;
  for (const auto& extent : shape) {
    uint64_t value = 0;
    if (!as_u64(extent, value) || value > uint64_t{std::numeric_limits<int64_t>::max()}) {
      TIDAL_FAIL(where, ": 'shape' must hold non-negative integers, got ", shape.dump());
    }
    info.shape.push_back(static_cast<int64_t>(value));
    if (value == 0) empty = true;
    if (!empty) {
      if (value > element_limit / elements) {
        TIDAL_FAIL(where, ": shape ", shape_string(info.shape), " is larger than the file");
      }
      elements *= value;
    }
  }
  if (empty) elements = 0;

  const auto& offsets = entry["data_offsets"];
  uint64_t begin = 0;
  uint64_t end = 0;
  if (!offsets.is_array() || offsets.size() != 2 || !as_u64(offsets[0], begin) ||
      !as_u64(offsets[1], end)) {
    TIDAL_FAIL(where, ": 'data_offsets' must be [begin, end] of non-negative integers, got ",
               offsets.dump());
  }
  if (begin > end)
    TIDAL_FAIL(where, ": data_offsets [", begin, ", ", end, "] end before they begin");
  if (end > data_area.size()) {
    TIDAL_FAIL(where, ": data_offsets [", begin, ", ", end, "] lie outside the data area of ",
               data_area.size(), " bytes (the file is truncated or the header is corrupt)");
  }
  if (const int bits = dtype_bits(info.dtype_name); bits > 0) {
    const uint64_t total_bits = elements * static_cast<uint64_t>(bits);
    if (total_bits % 8 != 0 || total_bits / 8 != end - begin) {
      TIDAL_FAIL(where, ": data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but ",
                 info.dtype_name, " ", shape_string(info.shape), " needs ", total_bits / 8,
                 total_bits % 8 != 0 ? " and a fraction" : "", " bytes");
    }
  }
  info.data = data_area.subspan(begin, end - begin);
  return info;
}

}  // namespace

int64_t TensorInfo::num_elements() const {
  int64_t count = 1;
  for (const int64_t extent : shape) count *= extent;
  return count;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const std::span<const std::byte> bytes = file_.bytes();
  if (bytes.size() < 8) {
    TIDAL_FAIL(path, ": truncated: ", bytes.size(),
               " bytes, too short for the 8-byte header length of a safetensors file");
  }
  const uint64_t header_size = read_u64_le(bytes.data());
  if (header_size > bytes.size() - 8) {
    TIDAL_FAIL(path, ": truncated header: it claims ", header_size, " bytes but only ",
               bytes.size() - 8, " follow the length");
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_size);
  } catch (const nlohmann::json::parse_error& error) {
    TIDAL_FAIL(path, ": corrupt header: not valid JSON (", error.what(), ")");
  }
  if (!header.is_object()) {
    TIDAL_FAIL(path, ": corrupt header: a ", header.type_name(), ", not a JSON object");
  }

  const std::span<const std::byte> data_area = bytes.subspan(8 + header_size);
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        TIDAL_FAIL(path, ": '__metadata__' is a ", entry.type_name(), ", not an object");
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          TIDAL_FAIL(path, ": '__metadata__' value of '", key, "' is a ", value.type_name(),
                     ", not a string");
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    tensors_.emplace(name, parse_entry(path, name, entry, data_area));
  }

  // Two tensors sharing bytes would alias each other's weights; the format forbids it.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : tensors_) {
    if (!info.data.empty()) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data.data() < b->data.data();
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& previous = *by_offset[i - 1];
    const TensorInfo& current = *by_offset[i];
    if (current.data.data() < previous.data.data() + previous.data.size()) {
      TIDAL_FAIL(path, ": tensors '", previous.name, "' and '", current.name,
                 "' have overlapping data_offsets");
    }
  }
}

Checkpoint Checkpoint::open(const std::string& directory) {
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    if (fs::exists(directory, error)) TIDAL_FAIL(directory, ": not a directory");
    TIDAL_FAIL(directory, ": no such checkpoint directory");
  }

  Checkpoint checkpoint;
  checkpoint.directory_ = directory;
  const fs::path root(directory);
  auto add_file = [&checkpoint](const std::string& path) {
    auto file = std::make_unique<SafetensorsFile>(path);
    for (const auto& [name, info] : file->tensors()) {
      const auto [it, inserted] = checkpoint.index_.emplace(name, &info);
      if (!inserted) {
        TIDAL_FAIL(checkpoint.directory_, ": tensor '", name, "' appears in both ",
                   it->second->file, " and ", path);
      }
    }
    checkpoint.files_.push_back(std::move(file));
  };

  const fs::path index_path = root / "model.safetensors.index.json";
  if (fs::exists(index_path, error)) {
    const std::string index_name = index_path.string();
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(read_text_file(index_name));
    } catch (const nlohmann::json::parse_error& parse_error) {
      TIDAL_FAIL(index_name, ": corrupt index: not valid JSON (", parse_error.what(), ")");
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      TIDAL_FAIL(index_name, ": corrupt index: no 'weight_map' object");
    }
    const auto& weight_map = index["weight_map"];
    std::set<std::string> shards;
    for (const auto& [name, shard] : weight_map.items()) {
      if (!shard.is_string()) {
        TIDAL_FAIL(index_name, ": weight_map entry of '", name, "' is a ", shard.type_name(),
                   ", not a file name");
      }
      shards.insert(shard.get<std::string>());
    }
    // Normalised so that "./a.safetensors" and "a.safetensors" name one file, opened once.
    auto shard_path_of = [&root](const std::string& shard) {
      return (root / shard).lexically_normal().string();
    };
    for (const std::string& shard : shards) {
      const std::string shard_path = shard_path_of(shard);
      if (!fs::is_regular_file(shard_path, error)) {
        TIDAL_FAIL(index_name, ": shard '", shard, "' named by the index does not exist (",
                   shard_path, ")");
      }
      if (std::none_of(checkpoint.files_.begin(), checkpoint.files_.end(),
                       [&](const auto& file) { return file->path() == shard_path; })) {
        add_file(shard_path);
      }
    }
    for (const auto& [name, shard] : weight_map.items()) {
      const std::string shard_path = shard_path_of(shard.get<std::string>());
      const auto found = checkpoint.index_.find(name);
      if (found == checkpoint.index_.end() || found->second->file != shard_path) {
        TIDAL_FAIL(index_name, ": tensor '", name, "' is mapped to shard '",
                   shard.get<std::string>(), "' but ", shard_path, " does not contain it");
      }
    }
    return checkpoint;
  }

  const fs::path single = root / "model.safetensors";
  if (fs::exists(single, error)) {
    add_file(single.string());
    return checkpoint;
  }

  // Hand-assembled directories (no index) still load when their shards do not collide.
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    if (entry.is_regular_file(error) && entry.path().extension() == ".safetensors") {
      found.push_back(entry.path().string());
    }
  }
  if (found.empty()) {
    TIDAL_FAIL(directory, ": no model.safetensors or model.safetensors.index.json");
  }
  std::sort(found.begin(), found.end());
  for (const std::string& path : found) add_file(path);
  return checkpoint;
}

bool Checkpoint::has(const std::string& name) const {
  return index_.contains(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> result;
  result.reserve(index_.size());
  for (const auto& [name, info] : index_) result.push_back(name);
  return result;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : found->second;
}

const TensorInfo& Checkpoint::tensor(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) TIDAL_FAIL(directory_, ": tensor '", name, "' not found in the checkpoint");
  if (!info->dtype) {
    TIDAL_FAIL(info->file, ": tensor '", name, "' has unsupported dtype ", info->dtype_name,
               " (tidal reads BF16, F16, F32, and F8_E4M3 with block scales)");
  }
  return *info;
}

const TensorInfo& Checkpoint::tensor(const std::string& name,
                                     std::span<const int64_t> expected_shape) const {
  const TensorInfo& info = tensor(name);
  if (!std::equal(info.shape.begin(), info.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    TIDAL_FAIL(info.file, ": tensor '", name, "' has shape ", shape_string(info.shape),
               ", expected ", shape_string(expected_shape));
  }
  return info;
}

}  // namespace tidal
