#include "search/index_db.h"

#include <sqlite3.h>

#include <cstring>

#include "core/error.h"

namespace clip::search {

namespace {
constexpr int kFormatVersion = 1;
}

struct IndexDb::Impl {
  std::string path;
  sqlite3* db = nullptr;
  bool in_transaction = false;

  ~Impl() {
    if (db) {
      if (in_transaction) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      sqlite3_close_v2(db);
    }
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ": " + what + ": " + (db ? sqlite3_errmsg(db) : "cannot open"));
  }

  void exec(const char* sql) const {
    char* msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : "error";
      sqlite3_free(msg);
      throw Error(path + ": " + m + " (in: " + std::string(sql).substr(0, 60) + ")");
    }
  }
};

// A prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(const IndexDb::Impl& d, const char* sql) : d_(d) {
    if (sqlite3_prepare_v2(d.db, sql, -1, &s_, nullptr) != SQLITE_OK) d.fail("cannot prepare a query");
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), int(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind_blob(int i, const void* p, size_t n) {
    sqlite3_bind_blob(s_, i, p, int(n), SQLITE_TRANSIENT);
    return *this;
  }
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    d_.fail("query failed");
  }
  int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  std::string text(int c) const {
    const auto* t = sqlite3_column_text(s_, c);
    return t ? std::string(reinterpret_cast<const char*>(t), size_t(sqlite3_column_bytes(s_, c))) : std::string();
  }
  std::vector<float> floats(int c) const {
    const void* p = sqlite3_column_blob(s_, c);
    const int n = sqlite3_column_bytes(s_, c);
    std::vector<float> v(size_t(n) / sizeof(float));
    if (p && n > 0) std::memcpy(v.data(), p, v.size() * sizeof(float));
    return v;
  }

 private:
  const IndexDb::Impl& d_;
  sqlite3_stmt* s_ = nullptr;
};

namespace {
constexpr const char* kColumns = "id, path, mtime_ns, size, hash, width, height";

ImageRecord record_of(const Stmt& s, bool with_vector) {
  ImageRecord r;
  r.id = s.i64(0);
  r.path = s.text(1);
  r.mtime_ns = s.i64(2);
  r.size = s.i64(3);
  r.hash = s.text(4);
  r.width = int(s.i64(5));
  r.height = int(s.i64(6));
  if (with_vector) r.vector = s.floats(7);
  return r;
}

std::string select(bool with_vector, const std::string& where) {
  return std::string("SELECT ") + kColumns + (with_vector ? ", vector" : "") + " FROM images" + where;
}
}  // namespace

IndexDb::IndexDb(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
IndexDb::IndexDb(IndexDb&&) noexcept = default;
IndexDb& IndexDb::operator=(IndexDb&&) noexcept = default;
IndexDb::~IndexDb() = default;

IndexDb IndexDb::open(const std::string& path, bool create) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &impl->db, flags, nullptr) != SQLITE_OK) {
    const std::string why = impl->db ? sqlite3_errmsg(impl->db) : "cannot open";
    throw Error(path + ": cannot open the index database: " + why +
                (create ? "" : " (create it with clip index)"));
  }
  sqlite3_busy_timeout(impl->db, 10000);
  // Is it ours? A foreign file (or not SQLite at all) fails here with a clear message.
  try {
    impl->exec("PRAGMA journal_mode=WAL");
    impl->exec("PRAGMA synchronous=NORMAL");
    impl->exec(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,"
        " mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL,"
        " width INTEGER NOT NULL, height INTEGER NOT NULL, vector BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS images_hash ON images(hash);");
  } catch (const Error& e) {
    throw Error(path + ": not a clip index database (" + e.what() + ")");
  }
  IndexDb db(std::move(impl));
  const std::string v = db.meta("format_version");
  if (v.empty()) {
    db.set_meta("format_version", std::to_string(kFormatVersion));
  } else if (v != std::to_string(kFormatVersion)) {
    throw Error(path + ": index format version " + v + ", this clip reads version " + std::to_string(kFormatVersion));
  }
  return db;
}

const std::string& IndexDb::path() const { return impl_->path; }

std::string IndexDb::meta(const std::string& key) const {
  Stmt s(*impl_, "SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  return s.step() ? s.text(0) : std::string();
}

void IndexDb::set_meta(const std::string& key, const std::string& value) {
  Stmt s(*impl_, "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  s.bind(1, key).bind(2, value);
  s.step();
}

std::optional<ModelIdentity> IndexDb::model() const {
  ModelIdentity m;
  m.fingerprint = meta("model_fingerprint");
  if (m.fingerprint.empty()) return std::nullopt;
  m.description = meta("model_description");
  m.path = meta("model_path");
  m.embed_dim = std::atoi(meta("embed_dim").c_str());
  return m;
}

void IndexDb::bind_model(const ModelIdentity& m) {
  if (auto have = model()) {
    if (have->fingerprint != m.fingerprint)
      throw Error(impl_->path + ": this index holds embeddings of another model (" + have->description + ", from " +
                  have->path + "); the model given is " + m.description + " (from " + m.path +
                  "): use that model, or index into a new database");
    return;
  }
  begin();
  set_meta("model_fingerprint", m.fingerprint);
  set_meta("model_description", m.description);
  set_meta("model_path", m.path);
  set_meta("embed_dim", std::to_string(m.embed_dim));
  commit();
}

int64_t IndexDb::generation() const {
  const std::string g = meta("generation");
  return g.empty() ? 0 : std::atoll(g.c_str());
}

void IndexDb::bump_generation() { set_meta("generation", std::to_string(generation() + 1)); }

void IndexDb::begin() {
  impl_->exec("BEGIN IMMEDIATE");
  impl_->in_transaction = true;
}
void IndexDb::commit() {
  impl_->exec("COMMIT");
  impl_->in_transaction = false;
}
void IndexDb::rollback() {
  if (!impl_->in_transaction) return;
  impl_->exec("ROLLBACK");
  impl_->in_transaction = false;
}

std::optional<ImageRecord> IndexDb::find_path(const std::string& path) const {
  Stmt s(*impl_, select(false, " WHERE path = ?").c_str());
  s.bind(1, path);
  if (!s.step()) return std::nullopt;
  return record_of(s, false);
}

std::vector<ImageRecord> IndexDb::find_hash(const std::string& hash) const {
  Stmt s(*impl_, select(true, " WHERE hash = ? ORDER BY id").c_str());
  s.bind(1, hash);
  std::vector<ImageRecord> out;
  while (s.step()) out.push_back(record_of(s, true));
  return out;
}

std::vector<ImageRecord> IndexDb::all_records(bool with_vectors) const {
  Stmt s(*impl_, select(with_vectors, " ORDER BY id").c_str());
  std::vector<ImageRecord> out;
  while (s.step()) out.push_back(record_of(s, with_vectors));
  return out;
}

std::optional<ImageRecord> IndexDb::get(int64_t id, bool with_vector) const {
  Stmt s(*impl_, select(with_vector, " WHERE id = ?").c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return record_of(s, with_vector);
}

int64_t IndexDb::count() const {
  Stmt s(*impl_, "SELECT COUNT(*) FROM images");
  s.step();
  return s.i64(0);
}

int64_t IndexDb::insert(const ImageRecord& r) {
  Stmt s(*impl_,
         "INSERT INTO images(path, mtime_ns, size, hash, width, height, vector) VALUES(?, ?, ?, ?, ?, ?, ?) "
         "ON CONFLICT(path) DO UPDATE SET mtime_ns = excluded.mtime_ns, size = excluded.size, hash = excluded.hash, "
         "width = excluded.width, height = excluded.height, vector = excluded.vector");
  s.bind(1, r.path).bind(2, r.mtime_ns).bind(3, r.size).bind(4, r.hash).bind(5, int64_t(r.width)).bind(6, int64_t(r.height));
  s.bind_blob(7, r.vector.data(), r.vector.size() * sizeof(float));
  s.step();
  Stmt id(*impl_, "SELECT id FROM images WHERE path = ?");
  id.bind(1, r.path);
  id.step();
  return id.i64(0);
}

void IndexDb::update_location(int64_t id, const std::string& path, int64_t mtime_ns, int64_t size) {
  Stmt s(*impl_, "UPDATE images SET path = ?, mtime_ns = ?, size = ? WHERE id = ?");
  s.bind(1, path).bind(2, mtime_ns).bind(3, size).bind(4, id);
  s.step();
}

void IndexDb::remove(int64_t id) {
  Stmt s(*impl_, "DELETE FROM images WHERE id = ?");
  s.bind(1, id);
  s.step();
}

}  // namespace clip::search
