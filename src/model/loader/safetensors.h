// Safetensors checkpoints, memory-mapped: one file, or a sharded set listed by
// model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"

namespace tidal {

// One tensor inside a mapped file. `data` points into the mapping and lives as long as the file.
struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the header ("BF16", "F8_E4M3", ...)
  std::optional<DType> dtype;  // empty when tidal cannot compute with this dtype
  std::vector<int64_t> shape;
  std::span<const std::byte> data;
  std::string file;  // the file it came from, for error messages

  int64_t num_elements() const;
};

// One .safetensors file. The constructor validates the header (length, JSON, offsets inside the
// file, sizes matching dtype x shape) and throws tidal::Error naming the file and the problem.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor of a synthetic checkpoint: a name, a dtype and a shape, no bytes.
struct SyntheticTensor {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
};

// All the safetensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json (every shard is opened and checked against the index).
class Checkpoint {
 public:
  // Throws tidal::Error naming the directory/file when nothing loadable is there.
  static Checkpoint open(const std::string& directory);
  // A checkpoint that names tensors without holding their bytes (dummy weights for benchmarks):
  // whoever loads it makes the values from (seed, name, element index) instead of copying. Each
  // tensor's `data` spans an inaccessible address reservation of the right size, so sizes and
  // offsets work as for a file while any read of the bytes faults at once rather than loading
  // garbage.
  static Checkpoint synthetic(const std::vector<SyntheticTensor>& tensors, uint64_t seed);
  bool is_synthetic() const { return reservation_ != nullptr; }
  uint64_t synthetic_seed() const { return synthetic_seed_; }

  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // Any tensor, whatever its dtype (tools that copy checkpoints); nullptr when missing.
  const TensorInfo* find(const std::string& name) const;

  // Throws tidal::Error "<file>: tensor '<name>' ..." when missing or of an unsupported dtype.
  const TensorInfo& tensor(const std::string& name) const;
  // As above and also checks the shape: the error names the tensor, its file, expected and actual.
  const TensorInfo& tensor(const std::string& name, std::span<const int64_t> expected_shape) const;
  const TensorInfo& tensor(const std::string& name,
                           std::initializer_list<int64_t> expected_shape) const {
    return tensor(name, std::span<const int64_t>(expected_shape.begin(), expected_shape.size()));
  }

  const std::string& directory() const { return directory_; }

 private:
  std::string directory_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  // Synthetic checkpoints only: the tensors, and the reservation their spans point into.
  std::vector<std::unique_ptr<TensorInfo>> synthetic_tensors_;
  std::shared_ptr<void> reservation_;
  uint64_t synthetic_seed_ = 0;
};

}  // namespace tidal
