#pragma once
// Percent-encoding (RFC 3986) for URL paths and query values: unreserved characters and '/' are
// kept, every other byte becomes %XX. Used by `clip pull` (hub paths) and `clip serve` (thumbnail
// links).
#include <string>

namespace clip {

std::string percent_encode(const std::string& s);

}  // namespace clip
