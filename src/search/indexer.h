#pragma once
// `clip index`: brings an index database up to date with folders and file lists, incrementally.
//   - a file whose path, mtime and size are in the database is not read again;
//   - a new or changed file is hashed (SHA-256 of its bytes): a hash already stored for a file
//     that is gone is a move (the row follows the file, nothing is encoded); a hash stored for a
//     file still present is a duplicate (its vector is copied, not encoded again);
//   - everything else is decoded and encoded; unreadable files are skipped with a warning each
//     (or fatal with `strict`);
//   - rows whose file no longer exists are dropped;
//   - work is committed in batches, one transaction each: a crash or Ctrl-C loses at most the
//     batch in flight, and the next run resumes where it stopped; nothing is stored twice.
// Then the vector index (search/vector_index.h) is rebuilt and cached beside the database.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "clip/clip.h"
#include "search/index_db.h"
#include "search/vector_index.h"

namespace clip::search {

struct IndexerOptions {
  int batch_size = 64;
  bool strict = false;
  bool include_hidden = false;  // also hidden folders, @eaDir, .git, node_modules
  IndexType index_type = IndexType::Exact;
  bool progress = true;  // a progress line on a terminal
  std::function<void(const std::string&)> warn;  // one call per skipped file
};

struct IndexerReport {
  int64_t found = 0, unchanged = 0, added = 0, changed = 0, moved = 0, duplicates = 0, removed = 0, skipped = 0;
  int64_t total = 0;  // rows in the database afterwards
  double seconds = 0, encode_seconds = 0;
  bool stopped = false;  // a stop was requested: the batches done so far are committed
};

// The identity of a model for an index: architecture and a checksum of fixed probe embeddings,
// so that two different weights of the same architecture are told apart.
ModelIdentity model_identity(const clip::Model& model, const std::string& path);

// Files to index: folders (recursive, sorted), image files, lists (.txt, one path per line,
// relative paths against the list's folder), image,caption CSVs (their image column, as
// clip train reads it) and tar archives such as WebDataset shards (.tar, .tar.gz, .tgz;
// "shard-{000..009}.tar" names several): their image members, each indexed under
// "<archive>/<member>" as if the archive were a folder (no real path has a regular file as a
// folder, so the two never collide). Absolute, normalized paths; errors name the input.
std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs, bool include_hidden);

struct TarMemberPath {
  std::string archive, member;
};
// "<archive>/<member>" split when a leading part is a tar archive on disk; nullopt otherwise.
std::optional<TarMemberPath> split_tar_member_path(const std::string& path);
// The bytes of an indexed image: a file, or a member of a tar archive.
std::string read_indexed_image(const std::string& path);

IndexerReport update_index(IndexDb& db, const clip::Model& model, const std::vector<std::string>& inputs,
                           const IndexerOptions& options, const std::atomic<int>* stop = nullptr);

// The vector index of `db` for `type`: the cached file when it matches the database's
// generation, otherwise rebuilt from the stored vectors (and cached when the folder is writable).
VectorIndex open_vector_index(IndexDb& db, IndexType type);
std::string vector_index_path(const IndexDb& db, IndexType type);

}  // namespace clip::search
