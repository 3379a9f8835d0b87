#include "text/vocabulary.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <filesystem>

#include "core/error.h"

#ifndef CLIP_INSTALL_DATADIR
#define CLIP_INSTALL_DATADIR ""
#endif

namespace clip {
namespace fs = std::filesystem;

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
}  // namespace

std::vector<TokenizerFile> tokenizer_files(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    if (fs::is_regular_file(p / "vocab.json", ec) && fs::is_regular_file(p / "merges.txt", ec))
      return {{(p / "vocab.json").string(), "vocab.json"}, {(p / "merges.txt").string(), "merges.txt"}};
    if (fs::is_regular_file(p / kOpenAIVocabFile, ec)) return {{(p / kOpenAIVocabFile).string(), kOpenAIVocabFile}};
    std::vector<std::string> gz;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (ends_with(e.path().filename().string(), ".txt.gz")) gz.push_back(e.path().string());
    if (ec) throw Error(path + ": cannot read directory: " + ec.message());
    std::sort(gz.begin(), gz.end());
    if (!gz.empty()) return {{gz.front(), fs::path(gz.front()).filename().string()}};
    throw Error(path + ": no tokenizer vocabulary (expected vocab.json + merges.txt, or a *.txt.gz BPE file)");
  }
  if (!fs::is_regular_file(p, ec)) throw Error(path + ": no such vocabulary file");
  const std::string name = p.filename().string();
  if (ends_with(name, ".json")) {
    const fs::path merges = p.parent_path() / "merges.txt";
    if (!fs::is_regular_file(merges, ec)) throw Error(path + ": no merges.txt beside it");
    return {{p.string(), "vocab.json"}, {merges.string(), "merges.txt"}};
  }
  return {{p.string(), ends_with(name, ".txt.gz") ? name : "bpe_vocab.txt.gz"}};
}

Tokenizer load_tokenizer(const std::string& path) {
  const std::vector<TokenizerFile> files = tokenizer_files(path);
  if (files.size() == 2) return Tokenizer::from_hf(files[0].path, files[1].path);
  return Tokenizer::from_openai_bpe(files[0].path);
}

namespace {
// The folder of the binary that holds this code: the executable for `clip`, the extension module
// for Python (python/clipcpp/_clipcpp*.so, with the vocabulary beside it in the package).
fs::path code_dir() {
  Dl_info info;
  if (::dladdr(reinterpret_cast<void*>(&default_vocabulary_candidates), &info) == 0 || !info.dli_fname) return {};
  std::error_code ec;
  const fs::path p = fs::canonical(info.dli_fname, ec);
  return ec ? fs::path() : p.parent_path();
}

fs::path executable_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return fs::path(buf).parent_path();
}
}  // namespace

std::vector<std::string> default_vocabulary_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("CLIP_VOCAB"); env && *env) c.push_back(env);
  const fs::path exe = executable_dir();
  if (!exe.empty()) {
    c.push_back((exe / "share" / "clip" / kOpenAIVocabFile).string());
    c.push_back((exe.parent_path() / "share" / "clip" / kOpenAIVocabFile).lexically_normal().string());
  }
  const fs::path code = code_dir();
  if (!code.empty() && code != exe) {
    c.push_back((code / kOpenAIVocabFile).string());  // the Python package
    // libclip.so installed in PREFIX/lib: PREFIX/share/clip
    c.push_back((code.parent_path() / "share" / "clip" / kOpenAIVocabFile).lexically_normal().string());
  }
  if (*CLIP_INSTALL_DATADIR) c.push_back((fs::path(CLIP_INSTALL_DATADIR) / "clip" / kOpenAIVocabFile).string());
  return c;
}

std::string default_vocabulary_path() {
  if (const char* env = std::getenv("CLIP_VOCAB"); env && *env) return env;  // as given: errors name it
  for (const std::string& p : default_vocabulary_candidates()) {
    std::error_code ec;
    if (fs::exists(p, ec)) return p;
  }
  return "";
}

std::string vocabulary_or_default(const std::string& vocab) {
  if (!vocab.empty()) return vocab;
  const std::string def = default_vocabulary_path();
  if (def.empty()) throw Error(no_vocabulary_message());
  return def;
}

std::string no_vocabulary_message() {
  std::string looked;
  for (const std::string& p : default_vocabulary_candidates()) looked += (looked.empty() ? "" : ", ") + p;
  return std::string("no vocabulary: pass --vocab FILE (OpenAI's ") + kOpenAIVocabFile +
         ", a vocab.json with merges.txt beside it, or a model folder) or set CLIP_VOCAB (looked in: " + looked +
         ")";
}

}  // namespace clip
