#pragma once
// Writes a tar file (pax) entry by entry with libarchive: WebDataset shards for the data
// tests and benchmarks. Header-only, no GoogleTest, so bench/ programs use it too.
#include <archive.h>
#include <archive_entry.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace clip::test {

class TarWriter {
 public:
  explicit TarWriter(const std::string& path) : a_(archive_write_new()) {
    archive_write_set_format_pax_restricted(a_);
    ok_ = archive_write_open_filename(a_, path.c_str()) == ARCHIVE_OK;
  }
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;
  ~TarWriter() {
    archive_write_close(a_);
    archive_write_free(a_);
  }
  bool ok() const { return ok_; }  // the file could be opened for writing

  // One regular file `name` holding `size` bytes.
  void add(const std::string& name, const void* data, size_t size) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, la_int64_t(size));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_write_header(a_, e);
    archive_write_data(a_, data, size);
    archive_entry_free(e);
  }
  void add(const std::string& name, const std::string& bytes) {
    add(name, bytes.data(), bytes.size());
  }
  void add(const std::string& name, const std::vector<uint8_t>& bytes) {
    add(name, bytes.data(), bytes.size());
  }

 private:
  archive* a_;
  bool ok_ = false;
};

}  // namespace clip::test
