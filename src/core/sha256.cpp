#include "core/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace clip {
namespace {

struct Digest {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  explicit Digest(const EVP_MD* md = EVP_sha256()) {
    if (!ctx || EVP_DigestInit_ex(ctx, md, nullptr) != 1) throw Error("sha256: OpenSSL digest unavailable");
  }
  ~Digest() { EVP_MD_CTX_free(ctx); }
  void add(const void* p, size_t n) {
    if (n && EVP_DigestUpdate(ctx, p, n) != 1) throw Error("sha256: update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1) throw Error("sha256: final failed");
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s += digits[md[i] >> 4];
      s += digits[md[i] & 15];
    }
    return s;
  }
};

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  Digest d;
  d.add(data, size);
  return d.hex();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  Digest d;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) d.add(buf.data(), n);
  if (std::ferror(f.get())) throw Error(path + ": read failed: " + std::strerror(errno));
  return d.hex();
}

std::string git_blob_sha1_file(const std::string& path) {
  std::error_code ec;
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::fseek(f.get(), 0, SEEK_END);
  const long size = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_SET);
  Digest d(EVP_sha1());
  const std::string header = "blob " + std::to_string(size) + std::string(1, '\0');
  d.add(header.data(), header.size());
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) d.add(buf.data(), n);
  if (std::ferror(f.get())) throw Error(path + ": read failed: " + std::strerror(errno));
  return d.hex();
}

}  // namespace clip
