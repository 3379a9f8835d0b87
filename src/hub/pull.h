#pragma once
// `clip pull ORG/NAME`: a model directory from a Hugging Face-style hub, through its HTTP API,
// into the cache of core/model_cache.h:
//   1. GET {endpoint}/api/models/{repo}/revision/{revision} -> {"sha": commit, "siblings": [...]}
//   2. for each file we read (weights as .safetensors, configs, tokenizer files):
//      GET {endpoint}/{repo}/resolve/{commit}/{file}, redirects followed, resumed with Range from
//      a .partial file; size checked against X-Linked-Size (or Content-Length), content against
//      X-Linked-Etag (SHA-256, for LFS files) or ETag (the git blob SHA-1, for small files);
//      moved into snapshots/<commit>/ only once verified;
//   3. refs/<revision> written last (atomically): a snapshot is complete when its ref exists.
#include <functional>
#include <string>
#include <vector>

namespace clip::hub {

struct PullOptions {
  std::string revision = "main";
  std::string endpoint;  // "" : $HF_ENDPOINT, else https://huggingface.co
  bool all_files = false;  // every file of the repository, not only the ones clip reads
  int timeout_s = 60;
  std::function<void(const std::string& file, int64_t done, int64_t total)> progress;  // may be empty
};

struct PullResult {
  std::string snapshot;  // the model directory
  std::string commit;
  std::vector<std::string> files;
  int64_t bytes_downloaded = 0;  // this run (resumed parts not counted twice)
  int files_already_present = 0;
};

// Errors name the repository, the file and the problem (HTTP status, unreachable endpoint,
// size or checksum mismatch).
PullResult pull(const std::string& repo_id, const PullOptions& options);

// Which of a repository's files clip needs: *.safetensors, config JSONs, tokenizer files.
bool is_model_file(const std::string& name);

}  // namespace clip::hub
