#include "apps/stop_signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <thread>

namespace clip::app {
namespace {

std::atomic<int> g_stop{0};
std::atomic<bool> g_graceful{false};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the signal path needs lock-free atomics");

sigset_t stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  return s;
}

// Async-signal-safe: atomics, write(), signal(), pthread_sigmask(), raise().
void on_stop_signal(int sig) {
  int expected = 0;
  if (g_graceful.load() && g_stop.compare_exchange_strong(expected, sig)) {
    const char* text = sig == SIGINT ? "\nclip: interrupted: finishing the work in flight and saving it "
                                       "(Ctrl-C again to quit at once)\n"
                                     : "\nclip: terminated: finishing the work in flight and saving it\n";
    ssize_t ignored = ::write(2, text, std::strlen(text));
    (void)ignored;
    return;
  }
  // The default action (terminate), delivered to this thread at once.
  ::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  ::raise(sig);
  ::_exit(128 + sig);  // not reached
}

void watch() {
  const sigset_t set = stop_signals();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) == 0) on_stop_signal(sig);
  }
}

}  // namespace

void start_signal_watcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    const sigset_t set = stop_signals();
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread(watch).detach();
  });
}

const std::atomic<int>& enable_graceful_stop() {
  g_stop.store(0);
  g_graceful.store(true);
  return g_stop;
}

void disable_graceful_stop() { g_graceful.store(false); }

}  // namespace clip::app
