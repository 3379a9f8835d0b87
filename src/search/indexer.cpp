#include "search/indexer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/test_points.h"
#include "data/datasets.h"

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

}  // namespace

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

std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs, bool include_hidden) {
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
      if (ext == ".csv" || ext == ".tsv") {
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
  const std::vector<std::string> files = collect_image_files(inputs, o.include_hidden);
  rep.found = int64_t(files.size());

  // What the database holds: by path, and the rows whose files are gone (candidates for moves).
  std::unordered_map<std::string, ImageRecord> by_path;
  for (ImageRecord& r : db.all_records(false)) by_path.emplace(r.path, std::move(r));
  std::unordered_set<std::string> wanted(files.begin(), files.end());
  std::unordered_map<std::string, std::vector<int64_t>> gone_by_hash;  // hash -> row ids of vanished files
  std::unordered_set<int64_t> gone;
  for (const auto& [path, r] : by_path) {
    if (wanted.count(path)) continue;
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      gone.insert(r.id);
      gone_by_hash[r.hash].push_back(r.id);
    }
  }

  struct Pending {
    std::string path;
    FileStat st;
  };
  std::vector<Pending> pending;
  for (const std::string& f : files) {
    const FileStat st = stat_file(f);
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
    pending.push_back({f, st});
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
    // 1. Hashes, in parallel (the files are read again by the decoder, from the page cache).
    std::vector<std::string> hashes(n), hash_errors(n);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < n; ++i) {
      try {
        hashes[i] = sha256_file(pending[start + i].path);
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
    std::vector<std::string> encode_paths;
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
      encode_paths.push_back(p.path);
      encode_items.push_back(i);
    }
    // 3. Encode.
    const auto te = Clock::now();
    std::vector<clip::SkippedInput> bad;
    std::vector<std::array<int, 2>> sizes;
    clip::Embeddings e;
    if (!encode_paths.empty()) e = model.encode_image_files(encode_paths, int(encode_paths.size()), bad, &sizes);
    rep.encode_seconds += std::chrono::duration<double>(Clock::now() - te).count();
    std::unordered_map<size_t, size_t> row_of;  // item -> row in e
    {
      size_t b = 0, row = 0;
      for (size_t k = 0; k < encode_items.size(); ++k) {
        if (b < bad.size() && size_t(bad[b].index) == k) {
          ++rep.skipped;
          std::string why = bad[b].reason;
          if (o.strict) throw Error(why);
          if (o.warn) o.warn(why);
          ++b;
          continue;
        }
        row_of[encode_items[k]] = row++;
      }
    }
    // 4. One transaction for the batch.
    test_point("index_batch");
    db.begin();
    try {
      std::unordered_map<size_t, std::pair<std::vector<float>, std::array<int, 2>>> written;
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
          auto w = written.find(pl.from_item);
          if (w == written.end()) continue;  // its source was unreadable
          r.vector = w->second.first;
          r.width = w->second.second[0];
          r.height = w->second.second[1];
          ++rep.duplicates;
        } else {
          auto row = row_of.find(pl.item);
          if (row == row_of.end()) continue;  // skipped
          r.vector.assign(e.data.begin() + long(row->second * size_t(D)), e.data.begin() + long((row->second + 1) * size_t(D)));
          r.width = sizes[row->second][0];
          r.height = sizes[row->second][1];
          written[pl.item] = {r.vector, sizes[row->second]};
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
