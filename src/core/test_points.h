#pragma once
// Named points in long-running code where a test can make the process signal itself, so that
// tests reach "a Ctrl-C that arrives in the middle of the loss / of a checkpoint write"
// deterministically instead of by luck of timing.
//
//   CLIP_TEST_SIGNAL_AT=loss:3      the 3rd time the point "loss" is passed, the process sends
//   CLIP_TEST_SIGNAL=TERM           itself SIGTERM (default INT) with kill(), exactly as an
//                                   outside `kill -TERM PID` would, and carries on.
//
// Unset (every normal run), a point costs one relaxed load of a flag read once.
namespace clip {

void test_point(const char* name);

}  // namespace clip
