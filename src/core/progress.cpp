#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace clip {

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total),
      enabled_(::isatty(STDERR_FILENO) == 1) {
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::add(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ > std::chrono::milliseconds(100) || done_ == total_) {
    last_ = now;
    draw(false);
  }
}

void Progress::draw(bool final) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? double(done_) / secs : 0.0;
  char eta[32] = "--";
  if (rate > 0 && total_ > 0) {
    int rem = int(double(total_ - done_) / rate + 0.5);
    std::snprintf(eta, sizeof eta, "%d:%02d", rem / 60, rem % 60);
  }
  std::fprintf(stderr, "\r\033[K%s %lld/%lld %s  %.1f %s/s  ETA %s %s", label_.c_str(),
               (long long)done_, (long long)total_, unit_.c_str(), rate, unit_.c_str(),
               final ? "0:00" : eta, suffix_.c_str());
  if (final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

}  // namespace clip
