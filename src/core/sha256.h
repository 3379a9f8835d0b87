#pragma once
// SHA-256 through OpenSSL's libcrypto (SHA-NI / AVX2 code paths chosen by OpenSSL at run time):
// content hashes of indexed images, and checksums of downloaded files.
#include <cstddef>
#include <string>

namespace clip {

std::string sha256_hex(const void* data, size_t size);
// The file's SHA-256, read in 1 MiB chunks; errors name the file.
std::string sha256_file(const std::string& path);
// Git's blob id of a file: SHA-1 of "blob <size>\0" + content (what a hub's ETag is for files
// not stored in LFS).
std::string git_blob_sha1_file(const std::string& path);

}  // namespace clip
