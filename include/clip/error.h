#pragma once
#include <stdexcept>
#include <string>

namespace clip {

// The one exception type for every user-facing failure: the message names the file (or input)
// and the problem, so a program can print it as it is.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace clip
