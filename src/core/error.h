#pragma once
// One exception type for every user-facing failure: the message names the file (or input)
// and the problem, so the CLI can print it and exit non-zero without a stack trace.
#include <stdexcept>
#include <string>

namespace clip {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace clip
