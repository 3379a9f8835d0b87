// `clip pull ORG/NAME`: a model from a Hugging Face-style hub into the local cache (hub/pull.h).
#include <cstdio>
#include <memory>

#include "apps/command.h"
#include "core/model_cache.h"
#include "core/progress.h"
#include "hub/pull.h"

namespace clip::app {
namespace {

struct PullOptions {
  std::string repo;
  clip::hub::PullOptions pull;
};

void run_pull(PullOptions o) {
  std::unique_ptr<Progress> bar;
  std::string current;
  int64_t shown = 0;
  o.pull.progress = [&](const std::string& file, int64_t done, int64_t total) {
    if (file != current) {
      if (bar) bar->finish();
      current = file;
      shown = 0;
      bar = std::make_unique<Progress>(file, total > 0 ? total : 0, "B");
    }
    if (done > shown) bar->add(done - shown);
    shown = done;
  };
  const clip::hub::PullResult r = clip::hub::pull(o.repo, o.pull);
  if (bar) bar->finish();
  std::fprintf(stderr, "clip pull: %s@%s (commit %s): %zu files, %d already here, %.1f MB downloaded\n", o.repo.c_str(),
               o.pull.revision.c_str(), r.commit.c_str(), r.files.size(), r.files_already_present,
               double(r.bytes_downloaded) / 1e6);
  std::printf("%s\n", r.snapshot.c_str());
}

CommandRegistrar reg("pull", 75, [](CLI::App& root) {
  auto o = std::make_shared<PullOptions>();
  auto* c = root.add_subcommand("pull", "Download a model from a Hugging Face-style hub into the local cache");
  c->add_option("repo", o->repo, "Repository id ORG/NAME")->required();
  c->add_option("--revision", o->pull.revision, "Branch, tag or commit")->capture_default_str();
  c->add_option("--endpoint", o->pull.endpoint, "Hub URL (default: $HF_ENDPOINT, else https://huggingface.co)");
  c->add_flag("--all-files", o->pull.all_files, "Every file of the repository (default: the ones clip reads)");
  c->add_option("--timeout", o->pull.timeout_s, "Seconds to connect or to wait for data")->check(CLI::Range(1, 3600));
  c->footer(
      "Examples:\n"
      "  clip pull openai/clip-vit-base-patch32\n"
      "  clip zeroshot -m openai/clip-vit-base-patch32 cat.jpg --labels cat,dog   # from the cache, no network\n"
      "  HF_ENDPOINT=http://mirror:8080 clip pull org/model --revision v1.0\n"
      "Cache: $CLIP_HOME (default ~/.cache/clip)/models/ORG--NAME/snapshots/<commit>/. Files are verified\n"
      "(size, SHA-256 or git blob id) before they enter it; an interrupted download resumes.");
  c->callback([o] { run_pull(*o); });
});

}  // namespace
}  // namespace clip::app
