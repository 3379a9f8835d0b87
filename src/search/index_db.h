#pragma once
// The image index's storage: one SQLite database holding, per image, its path, mtime, size,
// content hash, width, height and embedding (float32 blob), plus the identity of the model
// that made the embeddings. SQLite is the source of truth and the unit of atomicity: every
// batch of the indexer is one transaction, so a crash or Ctrl-C loses at most the batch in
// flight. The vector index (search/vector_index.h) is derived from it.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace clip::search {

struct ImageRecord {
  int64_t id = 0;  // SQLite rowid (also the id in the vector index)
  std::string path;
  int64_t mtime_ns = 0, size = 0;
  std::string hash;  // content hash (hex)
  int width = 0, height = 0;
  std::vector<float> vector;  // L2-normalized embedding
};

// What identifies the model whose embeddings a database holds.
struct ModelIdentity {
  std::string fingerprint;  // architecture + a checksum of a fixed probe embedding
  std::string description;  // human readable (Model::describe())
  std::string path;         // where it was loaded from (a default for `clip search`)
  int embed_dim = 0;
};

class IndexDb {
 public:
  // Opens (creating if `create`) the database. Errors name the file.
  static IndexDb open(const std::string& path, bool create);
  IndexDb(IndexDb&&) noexcept;
  IndexDb& operator=(IndexDb&&) noexcept;
  ~IndexDb();

  const std::string& path() const;

  // The model of the stored embeddings: empty for a new database. bind_model() records it for a
  // new database and refuses (clip::Error naming both) a different one.
  std::optional<ModelIdentity> model() const;
  void bind_model(const ModelIdentity& m);

  // Incremented by every committed change of the vectors: the vector index cache's key.
  int64_t generation() const;
  std::string meta(const std::string& key) const;  // "" when absent
  void set_meta(const std::string& key, const std::string& value);

  void begin();
  void commit();
  void rollback();

  // Lookups without vectors.
  std::optional<ImageRecord> find_path(const std::string& path) const;
  std::vector<ImageRecord> find_hash(const std::string& hash) const;
  std::vector<ImageRecord> all_records(bool with_vectors) const;
  std::optional<ImageRecord> get(int64_t id, bool with_vector) const;
  int64_t count() const;

  // Writes (inside begin/commit). insert() returns the new id; an existing path is replaced.
  int64_t insert(const ImageRecord& r);
  void update_location(int64_t id, const std::string& path, int64_t mtime_ns, int64_t size);
  void remove(int64_t id);
  void bump_generation();

  struct Impl;

 private:
  explicit IndexDb(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::search
