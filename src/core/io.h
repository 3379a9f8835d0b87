#pragma once
// File input/output that never loses data: whole-file reads with clear errors, atomic writes
// (temp file in the same folder, fsync, rename, fsync of the folder), read-only mmap, .npy.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace clip {

// Whether a file name ends with `lower_suffix` (given in lower case), ignoring the name's case:
// "MODEL.PT" ends with ".pt".
bool ends_with_ci(std::string_view name, std::string_view lower_suffix);

// Reads a whole file; throws clip::Error naming the file on failure.
std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// When a written file reaches the disk: Synced (before write_file_atomic returns: the file and
// its folder are fsync'd) or Deferred (the rename is still atomic, so a killed process leaves
// the old file or the new one, but the caller makes many files durable at once with
// sync_filesystem at the end: a dataset of 180,000 small images is not 360,000 fsyncs).
enum class Durability { Synced, Deferred };

// Writes bytes to `path` atomically: readers see the old file or the complete new one.
// Throws clip::Error (naming the file and errno text) on any failure, leaving the old file.
void write_file_atomic(const std::string& path, const void* data, size_t size,
                       Durability durability = Durability::Synced);
// Flushes the file system that holds `path` (syncfs); throws clip::Error naming it on failure.
void sync_filesystem(const std::string& path);
inline void write_file_atomic(const std::string& path, std::string_view s) {
  write_file_atomic(path, s.data(), s.size());
}

// The whole pages of [data, data + bytes) in private memory (a mapping made in memory, the
// heap) are given back to the system and read as zeros afterwards; pages the range only
// partly covers are left alone. Only for values that are never read again.
void discard_whole_pages(const void* data, size_t bytes);

// A read-only memory map of a whole file. Zero-length files map to an empty span.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // Bytes made in memory (e.g. a checkpoint converted at load), served like a mapping; `path`
  // names them in messages. release_pages does nothing for them.
  static std::shared_ptr<MappedFile> from_bytes(std::vector<uint8_t> bytes, const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the whole pages of [data, data + bytes) inside the mapping are no longer
  // needed (their contents were copied elsewhere), so they leave the resident set; reading
  // them again faults them back in from the file. Ranges outside the mapping are ignored.
  void release_pages(const void* data, size_t bytes) const;
  // For bytes made in memory too: the whole pages of the range are given back to the system
  // and read as zeros afterwards. Only for values that are never read again (a GGUF file's
  // dequantized weights once their blocks were prepared).
  void discard_pages(const void* data, size_t bytes) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  std::vector<uint8_t> owned_;  // from_bytes: the bytes themselves (data_ points here)
};

// NumPy .npy (format 1.0) for a float32 C-order array, written atomically.
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// Reads a .npy of float32 (little-endian, C order); returns the data, fills shape.
std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape);

}  // namespace clip
