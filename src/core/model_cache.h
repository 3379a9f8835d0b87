#pragma once
// Where `clip pull` keeps models and how `--model ORG/NAME` finds them again, with no network:
//   $CLIP_HOME (default ~/.cache/clip)/models/ORG--NAME/
//     snapshots/<commit>/<files>     complete, verified files only
//     refs/<revision>                the commit a revision (main, a tag) resolved to
//     incomplete/<commit>/<file>.partial   downloads in progress (resumed with Range)
#include <optional>
#include <string>

namespace clip {

std::string clip_home();
// "org/name" (letters, digits, - _ .; one slash) -> true.
bool looks_like_repo_id(const std::string& s);
std::string repo_cache_dir(const std::string& repo_id);
// The snapshot folder of a pulled repository at `revision` (a ref name or a commit), if complete.
std::optional<std::string> cached_snapshot(const std::string& repo_id, const std::string& revision = "main");
// `path` if it exists; else, for "org/name[@revision]" pulled before, its snapshot folder;
// else `path` unchanged (the caller's error then names it, with a hint to pull).
std::string resolve_model_path(const std::string& path);

}  // namespace clip
