#pragma once
// Strict base64 (RFC 4648, with or without padding; "data:...;base64," prefixes accepted) for
// images in JSON requests. Hand-written because OpenSSL's EVP_DecodeBlock neither rejects bad
// padding nor reports the decoded length without it.
#include <optional>
#include <string>
#include <string_view>

namespace clip {

// nullopt for anything that is not base64 (the caller answers 400).
std::optional<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

}  // namespace clip
