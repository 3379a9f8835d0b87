#include "search/indexer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/test_points.h"
#include "data/datasets.h"
#include "data/tar_reader.h"

namespace clip::search {
namespace fs = std::filesystem;

namespace {

// Folders that are never photos: hidden ones, Synology's thumbnails, VCS and package trees.
bool skipped_folder(const fs::path& p) {
  const std::string n = p.filename().string();
  return (!n.empty() && n[0] == '.') || n == "@eaDir" || n == "node_modules" || n == "__pycache__";
}

std::string normal(const fs::path& p) {
  std::error_code ec;
  fs::path a = fs::absolute(p, ec);
  return (ec ? p : a).lexically_normal().string();
}

struct FileStat {
  int64_t mtime_ns = 0, size = 0;
  bool ok = false;
};

FileStat stat_file(const std::string& path) {
  struct stat st;
  FileStat s;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return s;
  s.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.size = int64_t(st.st_size);
  s.ok = true;
  return s;
}

// The image members of tar archives (WebDataset shards), listed once per run.
class TarListings {
 public:
  // Image members of `archive` by name; null when the archive cannot be read (`error` says why).
  const std::unordered_map<std::string, FileStat>* members(const std::string& archive, std::string* error = nullptr) {
    auto it = cache_.find(archive);
    if (it == cache_.end()) {
      Listing l;
      try {
        data::TarReader tar(archive);
        data::TarMember m;
        while (tar.next(m))
          if (data::is_image_file_name(m.name)) {
            FileStat st;
            st.mtime_ns = m.mtime_ns;
            st.size = m.size;
            st.ok = true;
            l.order.push_back(m.name);
            l.members.emplace(m.name, st);
          }
      } catch (const Error& e) {
        l.error = e.what();
      }
      it = cache_.emplace(archive, std::move(l)).first;
    }
    if (!it->second.error.empty()) {
      if (error) *error = it->second.error;
      return nullptr;
    }
    return &it->second.members;
  }
  const std::vector<std::string>& order(const std::string& archive) { return cache_.at(archive).order; }

 private:
  struct Listing {
    std::unordered_map<std::string, FileStat> members;
    std::vector<std::string> order;  // as stored in the archive
    std::string error;
  };
  std::unordered_map<std::string, Listing> cache_;
};

std::string member_path(const std::string& archive, const std::string& member) { return archive + "/" + member; }

// Whether an indexed path still names something: a file, or a member of an archive that is still
// listed. An archive that cannot be read now keeps its rows (it may be on a disk that is away).
bool still_exists(const std::string& path, TarListings& tars) {
  std::error_code ec;
  if (fs::exists(path, ec)) return true;
  const auto m = split_tar_member_path(path);
  if (!m) return false;
  std::string error;
  const auto* members = tars.members(m->archive, &error);
  return !members || members->count(m->member) > 0;
}

// The bytes of the listed members of one archive, in one pass over it.
std::unordered_map<std::string, std::string> read_members(const std::string& archive,
                                                          const std::unordered_set<std::string>& wanted) {
  std::unordered_map<std::string, std::string> out;
  data::TarReader tar(archive);
  data::TarMember m;
  while (out.size() < wanted.size() && tar.next(m))
    if (wanted.count(m.name)) out[m.name] = tar.read();
  return out;
}

}  // namespace

std::optional<TarMemberPath> split_tar_member_path(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!data::is_tar_name(prefix)) continue;
    std::error_code ec;
    if (fs::is_regular_file(prefix, ec) && slash + 1 < path.size()) return TarMemberPath{prefix, path.substr(slash + 1)};
  }
  return std::nullopt;
}

std::string read_indexed_image(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (const auto m = split_tar_member_path(path)) {
      auto got = read_members(m->archive, {m->member});
      auto it = got.find(m->member);
      if (it == got.end()) throw Error(path + ": no such member in " + m->archive);
      return std::move(it->second);
    }
  }
  return read_text_file(path);
}

ModelIdentity model_identity(const clip::Model& model, const std::string& path) {
  ModelIdentity m;
  m.description = model.describe();
  m.path = normal(path);
  m.embed_dim = model.embed_dim();
  // A checksum of a fixed probe: a mid-grey image's embedding (no tokenizer needed), rounded so
  // that kernel-path differences (1e-6) do not change it.
  const int S = model.image_size();
  std::vector<uint8_t> grey(size_t(S) * S * 3, 128);
  const clip::Embeddings e = model.encode_image_rgb(grey.data(), S, S);
  std::string probe;
  for (int64_t j = 0; j < std::min<int64_t>(e.cols, 16); ++j) probe += std::to_string(std::lround(e.data[size_t(j)] * 1000)) + ",";
  m.fingerprint = m.description + "|" + sha256_hex(probe.data(), probe.size()).substr(0, 16);
  return m;
}

namespace {

std::vector<std::string> collect(const std::vector<std::string>& given, bool include_hidden, TarListings& tars) {
  // "shard-{000..009}.tar" (WebDataset's brace notation) names several archives.
  std::vector<std::string> inputs;
  for (const std::string& in : given) {
    std::error_code ec;
    if (!fs::exists(in, ec) && in.find('{') != std::string::npos && data::is_tar_name(in)) {
      for (auto& shard : data::expand_shards(in)) inputs.push_back(shard);
    } else {
      inputs.push_back(in);
    }
  }
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  auto add = [&](const std::string& p) {
    if (seen.insert(p).second) out.push_back(p);
  };
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      auto it = fs::recursive_directory_iterator(in, fs::directory_options::skip_permission_denied, ec);
      for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const fs::path& p = it->path();
        std::error_code e2;
        if (it->is_directory(e2)) {
          if (!include_hidden && skipped_folder(p)) it.disable_recursion_pending();
          continue;
        }
        if (!include_hidden && !p.filename().empty() && p.filename().string()[0] == '.') continue;
        if (it->is_regular_file(e2) && data::is_image_file_name(p.string())) found.push_back(normal(p));
      }
      if (ec) throw Error(in + ": cannot list folder: " + ec.message());
      std::sort(found.begin(), found.end());
      for (auto& f : found) add(f);
    } else if (fs::is_regular_file(in, ec)) {
      std::string ext = fs::path(in).extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (data::is_tar_name(in)) {
        // A WebDataset shard: its image members, in the archive's order.
        const std::string archive = normal(in);
        std::string error;
        if (!tars.members(archive, &error)) throw Error(error);
        for (const std::string& m : tars.order(archive)) add(member_path(archive, m));
      } else if (ext == ".csv" || ext == ".tsv") {
        // An image,caption CSV (as clip train and clip eval read it): its image paths.
        const data::Dataset d = data::open_dataset(in, {});
        for (const data::Sample& smp : d.samples)
          if (!smp.path.empty()) add(normal(smp.path));
      } else if (ext == ".txt" || ext == ".lst") {
        const fs::path base = fs::path(in).parent_path();
        const std::string text = read_text_file(in);
        size_t pos = 0;
        while (pos < text.size()) {
          size_t nl = text.find('\n', pos);
          if (nl == std::string::npos) nl = text.size();
          std::string line = text.substr(pos, nl - pos);
          pos = nl + 1;
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (line.empty()) continue;
          fs::path p(line);
          add(normal(p.is_absolute() ? p : base / p));
        }
      } else {
        add(normal(in));
      }
    } else {
      throw Error(in + ": no such file or folder");
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs, bool include_hidden) {
  TarListings tars;
  return collect(inputs, include_hidden, tars);
}

std::string vector_index_path(const IndexDb& db, IndexType type) {
  return db.path() + "." + index_type_name(type) + ".faiss";
}

VectorIndex open_vector_index(IndexDb& db, IndexType type) {
  const std::string path = vector_index_path(db, type);
  const std::string key = "vector_index_" + std::string(index_type_name(type)) + "_generation";
  std::error_code ec;
  if (db.meta(key) == std::to_string(db.generation()) && fs::exists(path, ec)) {
    try {
      return VectorIndex::load(path);
    } catch (const Error&) {
      // a damaged cache: rebuilt below
    }
  }
  const auto model = db.model();
  const int dim = model ? model->embed_dim : 0;
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  for (const ImageRecord& r : db.all_records(true)) {
    if (int(r.vector.size()) != dim) throw Error(db.path() + ": row " + std::to_string(r.id) + " has a vector of the wrong size");
    ids.push_back(r.id);
    vectors.insert(vectors.end(), r.vector.begin(), r.vector.end());
  }
  if (dim <= 0) throw Error(db.path() + ": the index is empty (no model recorded yet): run clip index first");
  VectorIndex index = VectorIndex::build(type, dim, ids, vectors);
  try {
    index.save(path);
    db.set_meta(key, std::to_string(db.generation()));
  } catch (const Error&) {
    // a read-only folder: searching still works, the index is rebuilt next time
  }
  return index;
}

IndexerReport update_index(IndexDb& db, const clip::Model& model, const std::vector<std::string>& inputs,
                           const IndexerOptions& o, const std::atomic<int>* stop) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  IndexerReport rep;
  const int D = model.embed_dim();
  TarListings tars;
  const std::vector<std::string> files = collect(inputs, o.include_hidden, tars);
  rep.found = int64_t(files.size());

  // What the database holds: by path, and the rows whose files are gone (candidates for moves).
  std::unordered_map<std::string, ImageRecord> by_path;
  for (ImageRecord& r : db.all_records(false)) by_path.emplace(r.path, std::move(r));
  std::unordered_set<std::string> wanted(files.begin(), files.end());
  std::unordered_map<std::string, std::vector<int64_t>> gone_by_hash;  // hash -> row ids of vanished files
  std::unordered_set<int64_t> gone;
  for (const auto& [path, r] : by_path) {
    if (wanted.count(path)) continue;
    if (!still_exists(path, tars)) {
      gone.insert(r.id);
      gone_by_hash[r.hash].push_back(r.id);
    }
  }

  struct Pending {
    std::string path;
    FileStat st;
    std::optional<TarMemberPath> member;  // set for a member of a tar archive
  };
  std::vector<Pending> pending;
  for (const std::string& f : files) {
    std::optional<TarMemberPath> member;
    FileStat st = stat_file(f);
    if (!st.ok && (member = split_tar_member_path(f))) {
      const auto* members = tars.members(member->archive);
      if (auto m = members ? members->find(member->member) : decltype(members->end()){}; members && m != members->end()) st = m->second;
    }
    if (!st.ok) {
      ++rep.skipped;
      if (o.strict) throw Error(f + ": cannot read (not a regular file)");
      if (o.warn) o.warn(f + ": cannot read (not a regular file)");
      continue;
    }
    auto it = by_path.find(f);
    if (it != by_path.end() && it->second.mtime_ns == st.mtime_ns && it->second.size == st.size) {
      ++rep.unchanged;
      continue;
    }
    pending.push_back({f, st, member});
  }

  std::unordered_set<int64_t> reused;  // gone rows that became moves
  Progress progress("index", int64_t(pending.size()), "img");
  if (!o.progress) progress.finish();
  const size_t B = size_t(std::max(1, o.batch_size));
  for (size_t start = 0; start < pending.size(); start += B) {
    if (stop && stop->load()) {
      rep.stopped = true;
      break;
    }
    const size_t n = std::min(B, pending.size() - start);
    // 1. Archive members are read into memory, one pass per archive; then hashes, in parallel
    // (files are read again by the decoder, from the page cache).
    std::vector<std::string> member_bytes(n), hashes(n), hash_errors(n);
    {
      std::map<std::string, std::unordered_set<std::string>> wanted;  // archive -> members
      for (size_t i = 0; i < n; ++i)
        if (const auto& m = pending[start + i].member) wanted[m->archive].insert(m->member);
      for (const auto& [archive, names] : wanted) {
        std::unordered_map<std::string, std::string> got;
        std::string error;
        try {
          got = read_members(archive, names);
        } catch (const Error& e) {
          error = e.what();  // what was read before the damage is kept
        }
        for (size_t i = 0; i < n; ++i) {
          const auto& m = pending[start + i].member;
          if (!m || m->archive != archive) continue;
          if (auto g = got.find(m->member); g != got.end()) member_bytes[i] = std::move(g->second);
          else hash_errors[i] = pending[start + i].path + ": cannot read the member" + (error.empty() ? "" : ": " + error);
        }
      }
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < n; ++i) {
      if (!hash_errors[i].empty()) continue;
      try {
        const Pending& p = pending[start + i];
        hashes[i] = p.member ? sha256_hex(member_bytes[i].data(), member_bytes[i].size()) : sha256_file(p.path);
      } catch (const std::exception& e) {
        hash_errors[i] = e.what();
      }
    }
    // 2. Moves and duplicates need no encoding; the rest is encoded once per distinct hash.
    struct Plan {
      size_t item;
      enum { Move, CopyStored, CopyBatch, Encode } kind;
      int64_t from_id = 0;
      size_t from_item = 0;
    };
    std::vector<Plan> plans;
    std::vector<size_t> encode_items;
    std::unordered_map<std::string, size_t> batch_first;  // hash -> item encoded in this batch
    for (size_t i = 0; i < n; ++i) {
      const Pending& p = pending[start + i];
      if (!hash_errors[i].empty()) {
        ++rep.skipped;
        if (o.strict) throw Error(hash_errors[i]);
        if (o.warn) o.warn(hash_errors[i]);
        continue;
      }
      const std::string& h = hashes[i];
      auto g = gone_by_hash.find(h);
      if (g != gone_by_hash.end() && !g->second.empty() && !by_path.count(p.path)) {
        plans.push_back({i, Plan::Move, g->second.back()});
        reused.insert(g->second.back());
        g->second.pop_back();
        continue;
      }
      bool stored = false;
      for (const ImageRecord& r : db.find_hash(h)) {
        if (r.path != p.path && !reused.count(r.id) && !gone.count(r.id)) {
          plans.push_back({i, Plan::CopyStored, r.id});
          stored = true;
          break;
        }
      }
      if (stored) continue;
      if (auto b = batch_first.find(h); b != batch_first.end()) {
        plans.push_back({i, Plan::CopyBatch, 0, b->second});
        continue;
      }
      batch_first[h] = i;
      plans.push_back({i, Plan::Encode});
      encode_items.push_back(i);
    }
    // 3. Encode: files by path, archive members from memory.
    const auto te = Clock::now();
    struct Encoded {
      std::vector<float> vector;
      std::array<int, 2> size;
    };
    std::unordered_map<size_t, Encoded> encoded;  // item -> its embedding
    auto take = [&](const std::vector<size_t>& items, const clip::Embeddings& e, const std::vector<clip::SkippedInput>& bad,
                    const std::vector<std::array<int, 2>>& sizes) {
      size_t b = 0, row = 0;
      for (size_t k = 0; k < items.size(); ++k) {
        if (b < bad.size() && size_t(bad[b].index) == k) {
          ++rep.skipped;
          const std::string why = bad[b].reason;
          if (o.strict) throw Error(why);
          if (o.warn) o.warn(why);
          ++b;
          continue;
        }
        encoded[items[k]] = {std::vector<float>(e.data.begin() + long(row * size_t(D)), e.data.begin() + long((row + 1) * size_t(D))), sizes[row]};
        ++row;
      }
    };
    {
      std::vector<size_t> file_items, member_items;
      std::vector<std::string> paths, names;
      std::vector<std::string_view> bytes;
      for (size_t i : encode_items) {
        const Pending& p = pending[start + i];
        (p.member ? member_items : file_items).push_back(i);
        if (p.member) {
          names.push_back(p.path);
          bytes.emplace_back(member_bytes[i]);
        } else {
          paths.push_back(p.path);
        }
      }
      for (int pass = 0; pass < 2; ++pass) {
        const std::vector<size_t>& items = pass == 0 ? file_items : member_items;
        if (items.empty()) continue;
        std::vector<clip::SkippedInput> bad;
        std::vector<std::array<int, 2>> sizes;
        const clip::Embeddings e = pass == 0 ? model.encode_image_files(paths, int(paths.size()), bad, &sizes)
                                             : model.encode_image_data(bytes, names, int(bytes.size()), bad, &sizes);
        take(items, e, bad, sizes);
      }
    }
    rep.encode_seconds += std::chrono::duration<double>(Clock::now() - te).count();
    // 4. One transaction for the batch.
    test_point("index_batch");
    db.begin();
    try {
      for (const Plan& pl : plans) {
        const Pending& p = pending[start + pl.item];
        const bool existed = by_path.count(p.path) > 0;
        ImageRecord r;
        r.path = p.path;
        r.mtime_ns = p.st.mtime_ns;
        r.size = p.st.size;
        r.hash = hashes[pl.item];
        if (pl.kind == Plan::Move) {
          db.update_location(pl.from_id, p.path, p.st.mtime_ns, p.st.size);
          ++rep.moved;
          continue;
        }
        if (pl.kind == Plan::CopyStored) {
          auto src = db.get(pl.from_id, true);
          if (!src) continue;
          r.vector = src->vector;
          r.width = src->width;
          r.height = src->height;
          ++rep.duplicates;
        } else if (pl.kind == Plan::CopyBatch) {
          auto w = encoded.find(pl.from_item);
          if (w == encoded.end()) continue;  // its source was unreadable
          r.vector = w->second.vector;
          r.width = w->second.size[0];
          r.height = w->second.size[1];
          ++rep.duplicates;
        } else {
          auto enc = encoded.find(pl.item);
          if (enc == encoded.end()) continue;  // skipped
          r.vector = enc->second.vector;
          r.width = enc->second.size[0];
          r.height = enc->second.size[1];
          if (existed) ++rep.changed;
          else ++rep.added;
        }
        db.insert(r);
      }
      db.bump_generation();
      db.commit();
    } catch (...) {
      db.rollback();
      throw;
    }
    progress.add(int64_t(n));
  }
  progress.finish();
  if (!rep.stopped) {
    // Rows whose files are gone and were not moves.
    int64_t dropped = 0;
    db.begin();
    try {
      for (int64_t id : gone)
        if (!reused.count(id)) {
          db.remove(id);
          ++dropped;
        }
      if (dropped) db.bump_generation();
      db.commit();
    } catch (...) {
      db.rollback();
      throw;
    }
    rep.removed = dropped;
    (void)open_vector_index(db, o.index_type);  // rebuilt now, not at the first search
  }
  rep.total = db.count();
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

}  // namespace clip::search
