#include "core/model_cache.h"

#include <cstdlib>
#include <filesystem>

#include "core/io.h"

namespace clip {
namespace fs = std::filesystem;

std::string clip_home() {
  if (const char* h = std::getenv("CLIP_HOME"); h && *h) return h;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "clip").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "clip").string();
}

bool looks_like_repo_id(const std::string& s) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() || s.find('/', slash + 1) != std::string::npos)
    return false;
  if (s.find("..") != std::string::npos || s[0] == '.' || s[slash + 1] == '.') return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/')) return false;
  return true;
}

std::string repo_cache_dir(const std::string& repo_id) {
  std::string name = repo_id;
  name.replace(name.find('/'), 1, "--");
  return (fs::path(clip_home()) / "models" / name).string();
}

std::optional<std::string> cached_snapshot(const std::string& repo_id, const std::string& revision) {
  if (!looks_like_repo_id(repo_id)) return std::nullopt;
  const fs::path dir(repo_cache_dir(repo_id));
  std::error_code ec;
  std::string commit = revision;
  const fs::path ref = dir / "refs" / revision;
  if (fs::is_regular_file(ref, ec)) {
    try {
      commit = read_text_file(ref.string());
    } catch (...) {
      return std::nullopt;
    }
    while (!commit.empty() && (commit.back() == '\n' || commit.back() == '\r')) commit.pop_back();
  }
  const fs::path snap = dir / "snapshots" / commit;
  if (commit.empty() || commit.find('/') != std::string::npos || !fs::is_directory(snap, ec)) return std::nullopt;
  return snap.string();
}

std::string resolve_model_path(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return path;
  std::string repo = path, revision = "main";
  if (const size_t at = path.find('@'); at != std::string::npos) {
    repo = path.substr(0, at);
    revision = path.substr(at + 1);
  }
  if (auto snap = cached_snapshot(repo, revision)) return *snap;
  return path;
}

}  // namespace clip
