#include "core/io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/error.h"

namespace clip {

bool ends_with_ci(std::string_view name, std::string_view lower_suffix) {
  if (name.size() < lower_suffix.size()) return false;
  const std::string_view tail = name.substr(name.size() - lower_suffix.size());
  for (size_t i = 0; i < tail.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(tail[i])) != lower_suffix[i]) return false;
  return true;
}
namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + errno_text());
  struct stat st;
  if (fstat(fd, &st) != 0) { ::close(fd); throw Error(path + ": cannot stat: " + errno_text()); }
  if (S_ISDIR(st.st_mode)) { ::close(fd); throw Error(path + ": is a directory, not a file"); }
  std::vector<uint8_t> out;
  if (st.st_size > 0) out.reserve(size_t(st.st_size));
  uint8_t buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      throw Error(path + ": read error: " + errno_text());
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

std::string read_text_file(const std::string& path) {
  auto b = read_file(path);
  return std::string(b.begin(), b.end());
}

void write_file_atomic(const std::string& path, const void* data, size_t size, Durability durability) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::random_device rd;
  std::string tmp = (dir / ("." + target.filename().string() + ".tmp" + std::to_string(rd()))).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(path + ": cannot write: no folder " + dir.string());
    throw Error(path + ": cannot write in " + dir.string() + ": " + errno_text());
  }
  const auto* p = static_cast<const uint8_t*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string msg = path + ": write failed: " + errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(msg);
    }
    p += n;
    left -= size_t(n);
  }
  if (durability == Durability::Synced && ::fsync(fd) != 0) {
    std::string msg = path + ": fsync failed: " + errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  if (::close(fd) != 0) {
    std::string msg = path + ": close failed: " + errno_text();
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string msg = path + ": cannot replace: " + errno_text();
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  if (durability == Durability::Deferred) return;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void sync_filesystem(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open to sync: " + errno_text());
  const int rc = ::syncfs(fd);
  const std::string msg = rc != 0 ? path + ": syncfs failed: " + errno_text() : std::string();
  ::close(fd);
  if (rc != 0) throw Error(msg);
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + errno_text());
  struct stat st;
  if (fstat(fd, &st) != 0) { ::close(fd); throw Error(path + ": cannot stat: " + errno_text()); }
  if (S_ISDIR(st.st_mode)) { ::close(fd); throw Error(path + ": is a directory, not a file"); }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size_t(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { ::close(fd); throw Error(path + ": mmap failed: " + errno_text()); }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

std::shared_ptr<MappedFile> MappedFile::from_bytes(std::vector<uint8_t> bytes, const std::string& path) {
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->owned_ = std::move(bytes);
  m->size_ = m->owned_.size();
  m->data_ = m->owned_.empty() ? nullptr : m->owned_.data();
  return m;
}

void MappedFile::release_pages(const void* data, size_t bytes) const {
  if (!owned_.empty()) return;
  discard_pages(data, bytes);
}

void discard_whole_pages(const void* data, size_t bytes) {
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  // Only whole pages inside the range: neighbours sharing a page may still be in use.
  const uintptr_t first = (begin + page - 1) / page * page, last = (begin + bytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void MappedFile::discard_pages(const void* data, size_t bytes) const {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t map_begin = reinterpret_cast<uintptr_t>(data_);
  if (!data_ || begin < map_begin || begin + bytes > map_begin + size_) return;
  discard_whole_pages(data, bytes);
}

MappedFile::~MappedFile() {
  if (data_ && owned_.empty()) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  size_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    dict += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
    if (i + 1 < shape.size()) dict += " ";
    n *= size_t(shape[i]);
  }
  dict += "), }";
  size_t header_len = 10 + dict.size() + 1;
  size_t pad = (64 - header_len % 64) % 64;
  dict += std::string(pad, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  uint16_t hl = uint16_t(dict.size());
  out += char(hl & 0xff);
  out += char(hl >> 8);
  out += dict;
  out.append(reinterpret_cast<const char*>(data), n * sizeof(float));
  write_file_atomic(path, out);
}

std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape) {
  auto b = read_file(path);
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  size_t hl, off;
  if (b[6] == 1) { hl = b[8] | (size_t(b[9]) << 8); off = 10; }
  else { if (b.size() < 12) throw Error(path + ": truncated .npy header"); hl = b[8] | (size_t(b[9]) << 8) | (size_t(b[10]) << 16) | (size_t(b[11]) << 24); off = 12; }
  if (off + hl > b.size()) throw Error(path + ": truncated .npy header");
  std::string h(reinterpret_cast<const char*>(b.data() + off), hl);
  if (h.find("'<f4'") == std::string::npos) throw Error(path + ": .npy is not little-endian float32");
  if (h.find("'fortran_order': True") != std::string::npos) throw Error(path + ": Fortran-order .npy is not supported");
  auto lp = h.find('(', h.find("'shape'")), rp = h.find(')', lp);
  if (lp == std::string::npos || rp == std::string::npos) throw Error(path + ": .npy header has no shape");
  shape.clear();
  size_t n = 1;
  std::string dims = h.substr(lp + 1, rp - lp - 1);
  size_t pos = 0;
  while (pos < dims.size()) {
    while (pos < dims.size() && (dims[pos] == ' ' || dims[pos] == ',')) ++pos;
    if (pos >= dims.size()) break;
    size_t end = pos;
    while (end < dims.size() && dims[end] >= '0' && dims[end] <= '9') ++end;
    if (end == pos) throw Error(path + ": bad .npy shape");
    int64_t d = std::stoll(dims.substr(pos, end - pos));
    shape.push_back(d);
    n *= size_t(d);
    pos = end;
  }
  size_t data_off = off + hl;
  if (b.size() - data_off != n * 4) throw Error(path + ": .npy data size does not match its shape");
  std::vector<float> out(n);
  std::memcpy(out.data(), b.data() + data_off, n * 4);
  return out;
}

}  // namespace clip
