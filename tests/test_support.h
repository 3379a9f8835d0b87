#pragma once
// Shared by tests that generate reference data at test time. CTest runs each test case as its
// own process, several at once, so generation is serialised by an exclusive lock on a file
// beside the output and skipped when `ready_file` already exists.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace clip::test {

// The smallest cosine similarity between corresponding rows of two [rows, dim] matrices of
// `count` values each (double sums).
inline double min_row_cosine(const float* a, const float* b, size_t count, size_t dim) {
  double worst = 1;
  for (size_t r = 0; r < count / dim; ++r) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t j = 0; j < dim; ++j) {
      const double x = a[r * dim + j], y = b[r * dim + j];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    worst = std::min(worst, ab / std::sqrt(aa * bb));
  }
  return worst;
}

// Starts `argv` (argv[0] a path) as a child process with its stdout (and, with `with_stderr`,
// its stderr) written to `output`; `in_child` (optional) runs in the child just before exec
// (environment, limits). Returns its pid; the caller kills and reaps it.
inline pid_t spawn_with_output(std::vector<std::string> argv, const std::string& output, bool with_stderr,
                               const std::function<void()>& in_child = {}) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      if (with_stderr) ::dup2(fd, 2);
      ::close(fd);
    }
    if (in_child) in_child();
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

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

// Runs the built `clip` binary with `args` (shell syntax); captures stdout, stderr (through a
// per-process file in `scratch_dir`, so concurrent test processes do not collide) and the exit
// status (128 + signal number if it died of a signal).
struct CliRun {
  int status = -1;
  std::string out, err;
};

// `prefix` (shell syntax) goes before the binary: "cd DIR && env -u CLIP_VOCAB" runs it from
// another directory and environment.
inline CliRun run_clip(const std::string& args, const std::string& scratch_dir, const std::string& prefix = "") {
  std::filesystem::create_directories(scratch_dir);
  const std::string err_path = scratch_dir + "/stderr." + std::to_string(::getpid()) + ".txt";
  const std::string cmd = prefix + (prefix.empty() ? "" : " ") + std::string(CLIP_BINARY_DIR) + "/clip " + args + " 2>" + err_path;
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream in(err_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_path);
  return r;
}

// The tiny ViT CLIP with OpenAI's vocabulary size (tools/reference_model.py, config tiny-vocab,
// Hugging Face names), written once under build/test_tmp; "" if the script failed.
inline std::string tiny_vocab_model_dir() {
  static const std::string dir = [] {
    const std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_cli_model";
    const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                            "/tools/reference_model.py write --config tiny-vocab --schemes hf --out " + d;
    return generate_once(d + "/hf/model.safetensors", cmd) ? d + "/hf" : std::string();
  }();
  return dir;
}

}  // namespace clip::test
