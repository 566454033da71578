// Read-only memory mapping of a whole file (RAII): checkpoints are mapped, never read into copies.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace tidal {

class MappedFile {
 public:
  // Throws tidal::Error naming the path when the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) text file; throws tidal::Error naming the path on failure.
std::string read_text_file(const std::string& path);

}  // namespace tidal
