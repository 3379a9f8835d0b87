#include "core/test_points.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace clip {
namespace {

struct SignalPlan {
  bool armed = false;
  std::string point;
  long occurrence = 0;
  int signal = SIGINT;
};

const SignalPlan& plan() {
  static const SignalPlan p = [] {
    SignalPlan s;
    const char* at = std::getenv("CLIP_TEST_SIGNAL_AT");
    if (!at || !*at) return s;
    const char* colon = std::strrchr(at, ':');
    s.point = colon ? std::string(at, colon) : std::string(at);
    s.occurrence = colon ? std::atol(colon + 1) : 1;
    if (s.occurrence < 1) s.occurrence = 1;
    const char* sig = std::getenv("CLIP_TEST_SIGNAL");
    s.signal = sig && std::strcmp(sig, "TERM") == 0 ? SIGTERM : SIGINT;
    s.armed = true;
    return s;
  }();
  return p;
}

std::atomic<long> g_passes{0};

}  // namespace

void test_point(const char* name) {
  const SignalPlan& p = plan();
  if (!p.armed || p.point != name) return;
  if (g_passes.fetch_add(1) + 1 == p.occurrence) ::kill(::getpid(), p.signal);
}

}  // namespace clip
