#pragma once
// A progress line for long work: items done, rate and ETA, redrawn at most ~10 times a second
// on a terminal (stderr is a TTY) and silent when stderr is piped or redirected.
#include <chrono>
#include <cstdint>
#include <string>

namespace clip {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "items");
  ~Progress();
  void add(int64_t n = 1);
  void set_suffix(std::string s) { suffix_ = std::move(s); }
  void finish();
  bool enabled() const { return enabled_; }

 private:
  void draw(bool final);
  std::string label_, unit_, suffix_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace clip
