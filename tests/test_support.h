#pragma once
// Shared by tests that generate reference data at test time. CTest runs each test case as its
// own process, several at once, so generation is serialised by an exclusive lock on a file
// beside the output and skipped when `ready_file` already exists.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace clip::test {

// An exclusive lock on `path` (created if needed), held for the object's lifetime.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644)) {
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

// Runs `command` (once across concurrent test processes) unless `ready_file` exists; returns
// whether `ready_file` exists afterwards.
inline bool generate_once(const std::string& ready_file, const std::string& command) {
  namespace fs = std::filesystem;
  fs::path ready(ready_file);
  fs::create_directories(ready.parent_path().parent_path());
  FileLock lock(ready.parent_path().parent_path().string() + "/.generate.lock");
  if (!fs::exists(ready)) (void)std::system(command.c_str());
  return fs::exists(ready);
}

}  // namespace clip::test
