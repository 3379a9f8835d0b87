#pragma once
// Reads the regular-file members of a tar archive (plain, gzip, bzip2, xz or zstd compressed:
// libarchive's filters) one after the other: WebDataset shards for clip eval and clip index.
// Every error names the archive and, where there is one, the member.
#include <cstdint>
#include <memory>
#include <string>

struct archive;

namespace clip::data {

struct TarMember {
  std::string name;      // the path inside the archive
  int64_t size = 0;      // bytes
  int64_t mtime_ns = 0;  // the member's modification time
};

class TarReader {
 public:
  explicit TarReader(std::string path);  // throws clip::Error when the file cannot be opened
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // The next regular file's header; false at the end of the archive. Throws on a corrupt archive.
  bool next(TarMember& member);
  // The current member's bytes (at most `max_bytes`, else an error naming it). Call at most once
  // per member; members not read are skipped by the next call to next().
  std::string read(int64_t max_bytes = int64_t(1) << 31);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string current_;
  int64_t current_size_ = 0;
  std::unique_ptr<archive, int (*)(archive*)> a_;
};

// A tar archive by its name: .tar, .tar.gz, .tgz (case-insensitive).
bool is_tar_name(const std::string& path);

}  // namespace clip::data
