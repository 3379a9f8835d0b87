#include "hub/pull.h"

#include <httplib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io.h"
#include "core/model_cache.h"
#include "core/percent_encode.h"
#include "core/sha256.h"

namespace clip::hub {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_model_file(const std::string& name) {
  auto ends = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  if (name.find('/') != std::string::npos) return false;  // sub-folders hold other formats (onnx/, ...)
  return ends(".safetensors") || ends(".txt.gz") || name == "config.json" || name == "open_clip_config.json" ||
         name == "preprocessor_config.json" || name == "tokenizer.json" || name == "tokenizer_config.json" ||
         name == "special_tokens_map.json" || name == "vocab.json" || name == "merges.txt";
}

namespace {

struct Endpoint {
  std::string base;  // scheme://host[:port]
  std::string prefix;  // a path below the host, if any
};

Endpoint parse_endpoint(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos || (url.compare(0, scheme, "http") != 0 && url.compare(0, scheme, "https") != 0))
    throw Error("--endpoint " + url + ": expected http://HOST[:PORT] or https://HOST");
  const size_t path = url.find('/', scheme + 3);
  Endpoint e;
  e.base = url.substr(0, path);
  if (path != std::string::npos) e.prefix = url.substr(path);
  return e;
}

std::unique_ptr<httplib::Client> client(const Endpoint& e, int timeout_s) {
  auto c = std::make_unique<httplib::Client>(e.base);
  c->set_connection_timeout(timeout_s, 0);
  c->set_read_timeout(timeout_s, 0);
  c->set_write_timeout(timeout_s, 0);
  c->set_default_headers({{"User-Agent", std::string("clip/") + CLIP_VERSION}});
  c->set_keep_alive(false);  // one connection per request: a broken transfer never poisons the next
  if (const char* token = std::getenv("HF_TOKEN"); token && *token) c->set_bearer_token_auth(token);
  return c;
}

std::string http_problem(const httplib::Result& r, const std::string& what, const std::string& endpoint) {
  if (!r) return what + ": cannot reach " + endpoint + ": " + httplib::to_string(r.error());
  switch (r->status) {
    case 401:
    case 403: return what + ": HTTP " + std::to_string(r->status) + " (a private or gated repository: set HF_TOKEN)";
    case 404: return what + ": not found (HTTP 404)";
    default: return what + ": HTTP " + std::to_string(r->status);
  }
}

std::string unquote(std::string s) {
  if (s.rfind("W/", 0) == 0) s = s.substr(2);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

struct Expected {
  int64_t size = -1;
  std::string sha256, git_sha1;  // one of them, lower-case hex
};

bool valid_hex(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

void verify(const std::string& path, const Expected& x, const std::string& what) {
  std::error_code ec;
  const int64_t size = int64_t(fs::file_size(path, ec));
  if (ec) throw Error(what + ": cannot read the download: " + ec.message());
  if (x.size >= 0 && size != x.size)
    throw Error(what + ": " + std::to_string(size) + " bytes downloaded, the hub says " + std::to_string(x.size));
  if (!x.sha256.empty()) {
    const std::string got = sha256_file(path);
    if (got != x.sha256) throw Error(what + ": SHA-256 " + got + " differs from the hub's " + x.sha256 + ": refused");
  } else if (!x.git_sha1.empty()) {
    const std::string got = git_blob_sha1_file(path);
    if (got != x.git_sha1) throw Error(what + ": git blob SHA-1 " + got + " differs from the hub's " + x.git_sha1 + ": refused");
  }
}

}  // namespace

PullResult pull(const std::string& repo_id, const PullOptions& o) {
  if (!looks_like_repo_id(repo_id)) throw Error("'" + repo_id + "': expected a repository id ORG/NAME");
  std::string endpoint_url = o.endpoint;
  if (endpoint_url.empty()) {
    const char* env = std::getenv("HF_ENDPOINT");
    endpoint_url = env && *env ? env : "https://huggingface.co";
  }
  const Endpoint ep = parse_endpoint(endpoint_url);
  auto c = client(ep, o.timeout_s);

  // 1. The file list at this revision, and the commit it names.
  const std::string info_path = ep.prefix + "/api/models/" + percent_encode(repo_id) + "/revision/" + percent_encode(o.revision);
  c->set_follow_location(true);
  const httplib::Result info = c->Get(info_path);
  if (!info || info->status != 200) throw Error(http_problem(info, repo_id + "@" + o.revision, endpoint_url));
  json meta;
  try {
    meta = json::parse(info->body);
  } catch (const json::exception& e) {
    throw Error(repo_id + ": the hub's answer is not JSON: " + e.what());
  }
  if (!meta.is_object() || !meta.contains("siblings") || !meta["siblings"].is_array())
    throw Error(repo_id + ": the hub's answer has no file list (\"siblings\")");
  std::string commit = meta.value("sha", std::string());
  if (commit.empty()) commit = o.revision;
  if (commit.find('/') != std::string::npos || commit.find("..") != std::string::npos)
    throw Error(repo_id + ": unexpected commit id '" + commit + "'");
  PullResult result;
  result.commit = commit;
  for (const json& s : meta["siblings"]) {
    const std::string name = s.is_object() ? s.value("rfilename", std::string()) : std::string();
    if (name.empty() || name.find("..") != std::string::npos || name[0] == '/') continue;
    if (o.all_files || is_model_file(name)) result.files.push_back(name);
  }
  if (!o.all_files && std::none_of(result.files.begin(), result.files.end(), [](const std::string& f) {
        return f.size() > 12 && f.compare(f.size() - 12, 12, ".safetensors") == 0;
      }))
    throw Error(repo_id + "@" + o.revision + ": no .safetensors weights in the repository (clip reads safetensors; "
                "convert .bin/.pt files with tools/convert_openai_pt.py)");

  const fs::path root(repo_cache_dir(repo_id));
  const fs::path snapshot = root / "snapshots" / commit, incomplete = root / "incomplete" / commit;
  std::error_code ec;
  fs::create_directories(snapshot, ec);
  fs::create_directories(incomplete, ec);
  if (ec) throw Error(root.string() + ": cannot create the cache folder: " + ec.message());

  for (const std::string& file : result.files) {
    const std::string what = repo_id + ": " + file;
    const std::string url = ep.prefix + "/" + percent_encode(repo_id) + "/resolve/" + percent_encode(commit) + "/" + percent_encode(file);
    // 2a. Size and checksum from the hub itself (a HEAD, redirects not followed: the LFS
    //     headers are on the hub's redirect, not on the CDN's answer).
    c->set_follow_location(false);
    const httplib::Result head = c->Head(url);
    if (!head || (head->status != 200 && (head->status < 300 || head->status > 308)))
      throw Error(http_problem(head, what, endpoint_url));
    Expected x;
    const std::string linked_size = head->get_header_value("X-Linked-Size");
    const std::string length = head->get_header_value("Content-Length");
    if (!linked_size.empty()) x.size = std::atoll(linked_size.c_str());
    else if (head->status == 200 && !length.empty()) x.size = std::atoll(length.c_str());
    const std::string linked_etag = unquote(head->get_header_value("X-Linked-Etag"));
    const std::string etag = unquote(head->get_header_value("ETag"));
    if (valid_hex(linked_etag, 64)) x.sha256 = linked_etag;
    else if (valid_hex(etag, 64)) x.sha256 = etag;
    else if (valid_hex(etag, 40)) x.git_sha1 = etag;
    for (auto& ch : x.sha256) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    for (auto& ch : x.git_sha1) ch = char(std::tolower(static_cast<unsigned char>(ch)));

    const fs::path target = snapshot / file, partial = incomplete / (file + ".partial");
    if (fs::is_regular_file(target, ec) && (x.size < 0 || int64_t(fs::file_size(target, ec)) == x.size)) {
      ++result.files_already_present;
      continue;  // verified when it was moved there
    }
    fs::create_directories(partial.parent_path(), ec);
    fs::create_directories(target.parent_path(), ec);
    // 2b. Download, resuming a partial file.
    for (int attempt = 0; attempt < 2; ++attempt) {
      int64_t offset = fs::is_regular_file(partial, ec) ? int64_t(fs::file_size(partial, ec)) : 0;
      if (x.size >= 0 && offset > x.size) {
        fs::remove(partial, ec);
        offset = 0;
      }
      if (x.size >= 0 && offset == x.size) break;  // complete: verified below
      httplib::Headers headers;
      if (offset > 0) headers.emplace("Range", "bytes=" + std::to_string(offset) + "-");
      // Redirects (the hub sends LFS files to a CDN) followed here, each hop on a fresh client:
      // a hop's location is relative (same host) or absolute (another host). A 3xx answer is
      // recognised from its headers and its body never read.
      std::unique_ptr<httplib::Client> hop_client;
      httplib::Client* g = c.get();
      g->set_follow_location(false);
      std::string get_url = url;
      std::unique_ptr<FILE, int (*)(FILE*)> out(nullptr, &std::fclose);
      int status = 0;
      int64_t done = offset;
      std::string write_error, location;
      httplib::Result r(nullptr, httplib::Error::Unknown);
      for (int hop = 0;; ++hop) {
        location.clear();
        r = g->Get(
            get_url, headers,
            [&](const httplib::Response& res) {
              status = res.status;
              if (status >= 300 && status <= 308 && res.has_header("Location")) {
                location = res.get_header_value("Location");
                return false;
              }
              if (status == 206 && offset > 0) {
                out.reset(std::fopen(partial.c_str(), "ab"));
              } else if (status == 200) {
                done = 0;  // the server sent everything: start over
                out.reset(std::fopen(partial.c_str(), "wb"));
              } else {
                return false;
              }
              if (!out) write_error = partial.string() + ": cannot write: " + std::strerror(errno);
              return bool(out);
            },
            [&](const char* data, size_t n) {
              if (std::fwrite(data, 1, n, out.get()) != n) {
                write_error = partial.string() + ": write failed: " + std::strerror(errno);
                return false;
              }
              done += int64_t(n);
              result.bytes_downloaded += int64_t(n);
              if (o.progress) o.progress(file, done, x.size);
              return true;
            });
        if (location.empty()) break;
        if (hop == 5) throw Error(what + ": too many redirects");
        const size_t scheme = location.find("://");
        if (scheme == std::string::npos) {
          get_url = location;
          hop_client = client(ep, o.timeout_s);
        } else {
          const size_t path = location.find('/', scheme + 3);
          hop_client = client(Endpoint{location.substr(0, path), ""}, o.timeout_s);
          get_url = path == std::string::npos ? "/" : location.substr(path);
        }
        g = hop_client.get();
        g->set_follow_location(false);
      }
      if (out && std::fflush(out.get()) != 0) write_error = partial.string() + ": write failed: " + std::strerror(errno);
      out.reset();
      if (!write_error.empty()) throw Error(write_error);
      if (status == 416 && attempt == 0) {  // our partial file does not fit the server's: start over
        fs::remove(partial, ec);
        continue;
      }
      if (status != 200 && status != 206) {
        if (!r && status == 0) throw Error(http_problem(r, what, endpoint_url));
        throw Error(what + ": HTTP " + std::to_string(status) +
                    (status == 404 ? " (not found)" : status == 401 || status == 403 ? " (private or gated: set HF_TOKEN)" : ""));
      }
      if (!r)  // the connection broke mid-file: the partial file stays for the next run
        throw Error(what + ": the download broke off after " + std::to_string(done) + " bytes (" +
                    httplib::to_string(r.error()) + "); run the same command to resume");
      break;
    }
    // 2c. Verified, then moved into the snapshot; a bad file is not kept anywhere.
    try {
      verify(partial.string(), x, what);
    } catch (...) {
      fs::remove(partial, ec);
      throw;
    }
    fs::rename(partial, target, ec);
    if (ec) throw Error(target.string() + ": cannot move the download into place: " + ec.message());
  }
  // 3. The revision names the commit once every file is in place.
  fs::create_directories(root / "refs", ec);
  write_file_atomic((root / "refs" / o.revision).string(), commit + "\n");
  if (o.revision != commit) write_file_atomic((root / "refs" / commit).string(), commit + "\n");
  fs::remove_all(incomplete, ec);
  result.snapshot = snapshot.string();
  return result;
}

}  // namespace clip::hub
