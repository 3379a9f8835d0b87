#include "data/tar_reader.h"

#include <archive.h>
#include <archive_entry.h>

#include "core/error.h"
#include "core/io.h"

namespace clip::data {

TarReader::TarReader(std::string path) : path_(std::move(path)), a_(archive_read_new(), archive_read_free) {
  if (!a_) throw Error(path_ + ": cannot allocate a tar reader");
  archive_read_support_format_tar(a_.get());
  archive_read_support_format_gnutar(a_.get());
  archive_read_support_filter_all(a_.get());
  if (archive_read_open_filename(a_.get(), path_.c_str(), 1 << 16) != ARCHIVE_OK) {
    const char* m = archive_error_string(a_.get());
    throw Error(path_ + ": cannot open tar archive: " + (m ? m : "unknown error"));
  }
}

TarReader::~TarReader() = default;

bool TarReader::next(TarMember& member) {
  archive_entry* e = nullptr;
  for (;;) {
    const int rc = archive_read_next_header(a_.get(), &e);
    if (rc == ARCHIVE_EOF) return false;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      const char* m = archive_error_string(a_.get());
      throw Error(path_ + ": corrupt tar archive" + (current_.empty() ? "" : " after member " + current_) + ": " +
                  (m ? m : "unknown error"));
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    const char* name = archive_entry_pathname(e);
    member.name = name ? name : "";
    member.size = archive_entry_size(e);
    if (member.size < 0) throw Error(path_ + ": member " + member.name + " has a bad size");
    member.mtime_ns = int64_t(archive_entry_mtime(e)) * 1000000000 + int64_t(archive_entry_mtime_nsec(e));
    current_ = member.name;
    current_size_ = member.size;
    return true;
  }
}

std::string TarReader::read(int64_t max_bytes) {
  if (current_size_ > max_bytes)
    throw Error(path_ + ": member " + current_ + " is too large (" + std::to_string(current_size_) + " bytes)");
  std::string bytes(static_cast<size_t>(current_size_), '\0');
  int64_t got = 0;
  while (got < current_size_) {
    const la_ssize_t r = archive_read_data(a_.get(), bytes.data() + got, size_t(current_size_ - got));
    if (r < 0) {
      const char* m = archive_error_string(a_.get());
      throw Error(path_ + ": reading member " + current_ + ": " + (m ? m : "unknown error"));
    }
    if (r == 0) break;
    got += r;
  }
  if (got != current_size_) throw Error(path_ + ": member " + current_ + " is truncated");
  return bytes;
}

bool is_tar_name(const std::string& path) {
  return ends_with_ci(path, ".tar") || ends_with_ci(path, ".tar.gz") || ends_with_ci(path, ".tgz");
}

}  // namespace clip::data
