#pragma once
// Ctrl-C and SIGTERM for the whole program, in one place.
//
// main() blocks both signals before it starts any thread, so every thread of ours inherits the
// blocked mask: no signal interrupts our computing code or its system calls (no EINTR halfway
// through a checkpoint write). One watcher thread takes them with sigwait(). Threads that
// libraries started before main() (OpenBLAS's pool) do not block them; there an async-signal-
// safe handler does the same thing. Either way the same decision:
//   - by default, the signal's default action: the process ends as if nothing were installed;
//   - while a command has enabled a graceful stop (`clip train`), the first signal only sets a
//     flag that its loop reads between steps (the checkpoint is written by normal control
//     flow, never from a handler) and a second one ends the process at once.
#include <atomic>

namespace clip::app {

// Called first in main(). Idempotent.
void start_signal_watcher();

// While a graceful stop is enabled, the first SIGINT/SIGTERM stores its number in the returned
// flag instead of ending the process.
const std::atomic<int>& enable_graceful_stop();
void disable_graceful_stop();

}  // namespace clip::app
