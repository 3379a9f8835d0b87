// The training data pipeline (see loader.h for the contract).
//
// Shape of the pipeline: a single *sequencer* turns (seed, epoch) into the epoch's ordered list
// of raw items (a path, tar member bytes or an IDX index, plus caption/label) without decoding
// anything. Items get consecutive tickets; worker threads take tickets in order, decode and
// augment them out of order, and the consumer (next()) reassembles results by ticket. So the
// order of samples, and every random choice made for a sample (seeded by its epoch and id),
// is independent of the number of workers and of their timing.
//
// Streamed shards: the sequencer reads the epoch's shards (in a seeded order) through a shuffle
// buffer whose choices depend only on counts, never on contents. Resuming at sample k therefore
// replays the buffer on member *headers* only (a tar skip is a seek), learns which items sit
// in the buffer after k outputs, and re-reads just those members' bytes.
#include "data/loader.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/rng.h"
#include "text/prompt.h"
#include "core/test_points.h"
#include "core/io.h"
#include "text/tokenizer.h"

namespace clip::data {

namespace fs = std::filesystem;

namespace {

// ---- deterministic randomness -------------------------------------------------------------

// Distinct streams for the independent decisions made per (seed, epoch): the sample order, the
// shard order, the shuffle buffer, and each sample's own choices.
enum Salt : uint64_t { kOrder = 0x6f72646572ull, kUnits = 0x756e697473ull, kBuffer = 0x627566666572ull,
                       kSample = 0x73616d706c65ull };

inline uint64_t stream_seed(uint64_t seed, Salt salt, int64_t epoch, uint64_t index = 0) {
  return mix64(mix64(mix64(seed ^ salt) ^ uint64_t(epoch)) ^ index);
}


template <class T>
void fisher_yates(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.below(i))]);
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

bool parse_label(std::string text, int& out) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t used = 0;
  int v = -1;
  try {
    v = std::stoi(text, &used);
  } catch (...) {
    return false;
  }
  if (used != text.size() || v < 0) return false;
  out = v;
  return true;
}

std::vector<std::string> split_spec(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t sep = spec.find("::", start);
    std::string part = spec.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    if (!part.empty()) out.push_back(std::move(part));
    if (sep == std::string::npos) break;
    start = sep + 2;
  }
  return out;
}

// ---- sources --------------------------------------------------------------------------------

// One pair of an indexable source, kept small: CSV sources can have millions of rows.
struct Entry {
  std::string path;     // image file ("" for IDX)
  std::string caption;  // captioned sources only
  int label = -1;
  int32_t array = -1;   // index into Source::arrays (IDX)
};

struct Source {
  std::string spec;
  bool stream = false;
  bool captioned = false;  // entries carry captions (else captions come from templates)
  // Indexable sources.
  std::vector<Entry> entries;
  std::vector<clip::Image> arrays;
  // Streamed shards; shard_items[k] >= 0 caps the items read from shard k (from `limit`).
  std::vector<std::string> shards;
  std::vector<int64_t> shard_items;
  int64_t known_size = -1;  // items per epoch when known
  // The source's own class names (index = its label) and the loader label of each.
  std::vector<std::string> classnames;
  std::vector<int> label_map;

  int64_t size() const { return stream ? known_size : int64_t(entries.size()); }
  std::string entry_id(int64_t i) const {
    const Entry& e = entries[size_t(i)];
    return e.array >= 0 ? spec + "#" + std::to_string(e.array) : e.path;
  }
};

bool is_stream_spec(const std::string& spec) {
  const std::string l = lower(spec);
  return l.find(".tar") != std::string::npos &&
         (ends_with(l, ".tar") || ends_with(l, ".tar.gz") || ends_with(l, ".tgz") || l.find('{') != std::string::npos ||
          l.find(',') != std::string::npos);
}

int find_header(const std::vector<std::string>& header, const std::string& want) {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == want) return int(i);
  for (size_t i = 0; i < header.size(); ++i)  // pandas is exact; we also forgive the case
    if (lower(header[i]) == lower(want)) return int(i);
  return -1;
}

int find_header_any(const std::vector<std::string>& header, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    const int i = find_header(header, n);
    if (i >= 0) return i;
  }
  return -1;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// A CSV/TSV source, one pair per row (open_clip's CsvDataset). Without the caption column but
// with a label or class column it is a labelled set (e.g. cifar10_jpeg/*_labels.csv).
Source open_csv_source(const std::string& path, const PairSourceOptions& o) {
  if (!fs::is_regular_file(path)) throw Error(path + ": no such CSV file");
  const char sep = o.csv_separator ? o.csv_separator : ends_with(lower(path), ".tsv") ? '\t' : ',';
  auto rows = parse_csv(read_text_file(path), path, sep);
  if (rows.empty()) throw Error(path + ": empty CSV (no header)");
  const auto& header = rows[0];
  const int ci = find_header(header, o.csv_img_key);
  if (ci < 0)
    throw Error(path + ": no image column \"" + o.csv_img_key + "\" (csv_img_key) in the header: " + join(header, ", "));
  const int cc = find_header(header, o.csv_caption_key);
  const int cl = cc >= 0 ? -1 : find_header_any(header, {"label", "target", "class_id"});
  const int cn = cc >= 0 ? -1 : find_header_any(header, {"class", "classname", "class_name"});
  if (cc < 0 && cl < 0 && cn < 0)
    throw Error(path + ": no caption column \"" + o.csv_caption_key +
                "\" (csv_caption_key), nor a label/class column, in the header: " + join(header, ", "));
  Source s;
  s.spec = path;
  s.captioned = cc >= 0;
  const fs::path root = fs::path(path).parent_path();
  std::map<std::string, int> by_name;   // class name -> label, when there is no label column
  std::map<int, std::string> names;     // label -> class name
  // With a limit, every row is still checked and named: the class names are the file's.
  const size_t limit = o.limit > 0 ? size_t(o.limit) : rows.size();
  int num_labels = 0;
  for (size_t r = 1; r < rows.size() && (s.entries.size() < limit || !s.captioned); ++r) {
    auto field = [&](int c) -> const std::string& { return csv_field(rows, r, c, path); };
    Entry e;
    const std::string& image = field(ci);
    // An empty path stays an entry (skipped and counted when its turn comes, like a bad image).
    if (!image.empty()) e.path = fs::path(image).is_absolute() ? image : (root / image).string();
    if (cc >= 0) e.caption = field(cc);
    if (cl >= 0 && !parse_label(field(cl), e.label))
      throw Error(path + ": row " + std::to_string(r + 1) + ": label \"" + field(cl) + "\" is not a non-negative integer");
    num_labels = std::max(num_labels, e.label + 1);
    if (cn >= 0) {
      const std::string& name = field(cn);
      if (cl < 0) {
        by_name.emplace(name, -1);
      } else {
        auto [it, inserted] = names.emplace(e.label, name);
        if (!inserted && it->second != name)
          throw Error(path + ": row " + std::to_string(r + 1) + ": label " + std::to_string(e.label) + " is both \"" +
                      it->second + "\" and \"" + name + "\"");
      }
      if (cl < 0) e.caption = name;  // placeholder: replaced by the label below
    }
    if (s.entries.size() < limit) s.entries.push_back(std::move(e));
  }
  if (s.entries.empty()) throw Error(path + ": no rows after the header");
  if (cn >= 0 && cl < 0) {  // labels = sorted class names, as ImageFolder numbers folders
    int k = 0;
    for (auto& [name, id] : by_name) {
      id = k++;
      s.classnames.push_back(name);
    }
    for (auto& e : s.entries) {
      e.label = by_name.at(e.caption);
      e.caption.clear();
    }
  } else if (cl >= 0) {
    for (int c = 0; c < num_labels; ++c) s.classnames.push_back(names.count(c) ? names[c] : std::to_string(c));
  }
  return s;
}

Source from_dataset(Dataset d, const std::string& spec) {
  Source s;
  s.spec = spec;
  s.classnames = std::move(d.classnames);
  s.arrays = std::move(d.arrays);
  s.entries.reserve(d.samples.size());
  for (auto& x : d.samples) {
    Entry e;
    e.path = std::move(x.path);
    e.label = x.label;
    e.array = int32_t(x.array_index);
    s.entries.push_back(std::move(e));
  }
  return s;
}

// ---- raw items and the tar reader -------------------------------------------------------------

// A sample as the sequencer hands it out: nothing decoded yet.
struct RawItem {
  int source = -1;
  int64_t entry = -1;     // indexable sources: the entry
  uint64_t uid = 0;       // seeds the sample's own random choices
  int64_t ordinal = -1;   // streams: place in the epoch's input (before the shuffle buffer)
  std::string id;         // streams: "<shard>:<key>"
  std::vector<uint8_t> bytes;
  bool has_image = false, has_caption = false, bad_label = false;
  std::string caption;
  int label = -1;
};

// Where an epoch's stream reads from: a tar shard, or (when shards and indexable sources are
// mixed) a chunk [begin, end) of the epoch's permutation of the indexable samples.
struct Unit {
  int source = -1;
  int64_t shard = -1;
  int64_t begin = 0, end = 0;
};

using WarnFn = std::function<void(const std::string& id, const std::string& message)>;

// The indexable samples of all sources in one index space (concatenated in spec order), and
// each epoch's permutation of it.
struct IndexSpace {
  std::vector<int> sources;      // indexable sources, in order
  std::vector<int64_t> offsets;  // first global index of each, plus the total at the end
  int64_t total() const { return offsets.empty() ? 0 : offsets.back(); }
  std::pair<int, int64_t> locate(int64_t g) const {
    const size_t k = size_t(std::upper_bound(offsets.begin(), offsets.end(), g) - offsets.begin()) - 1;
    return {sources[k], g - offsets[k]};
  }
};

class Order {
 public:
  Order(int64_t n, bool shuffle, uint64_t seed) : n_(n) {
    if (!shuffle) return;
    perm_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) perm_[size_t(i)] = uint32_t(i);
    Rng rng(seed);
    fisher_yates(perm_, rng);
  }
  int64_t operator[](int64_t i) const { return perm_.empty() ? i : int64_t(perm_[size_t(i)]); }
  int64_t size() const { return n_; }

 private:
  int64_t n_;
  std::vector<uint32_t> perm_;
};

// Reads items from a list of units in order. Members of one item are consecutive tar members
// sharing a key (WebDataset's rule). Which items' bytes are actually read is chosen by
// ordinal (`keep`), so the same code serves reading, header-only replay and resume.
class ItemReader {
 public:
  ItemReader(const std::vector<Source>& sources, const IndexSpace& space, const Order* order,
             std::vector<Unit> units, WarnFn warn)
      : sources_(sources), space_(space), order_(order), units_(std::move(units)), warn_(std::move(warn)) {}
  ~ItemReader() { close_shard(); }
  ItemReader(const ItemReader&) = delete;
  ItemReader& operator=(const ItemReader&) = delete;

  // Bytes are read for ordinals >= keep_from and those in *keep; others are skipped.
  void set_keep(const std::unordered_set<int64_t>* keep, int64_t keep_from) {
    keep_ = keep;
    keep_from_ = keep_from;
  }
  int64_t count() const { return count_; }
  // The unit the last item came from (for the construction-time scan).
  int64_t unit_index() const { return int64_t(unit_); }

  bool next(RawItem& out) {
    while (unit_ < units_.size()) {
      const Unit& u = units_[unit_];
      if (u.shard < 0) {
        const int64_t pos = u.begin + in_unit_;
        if (pos < u.end) {
          out = RawItem{};
          const int64_t g = (*order_)[pos];
          std::tie(out.source, out.entry) = space_.locate(g);
          out.uid = uint64_t(g);
          out.ordinal = count_++;
          ++in_unit_;
          return true;
        }
      } else if (read_shard_item(u, out)) {
        out.uid = mix64(mix64((uint64_t(u.source) << 40) ^ uint64_t(u.shard)) ^ uint64_t(in_unit_)) | (1ull << 63);
        out.ordinal = count_++;
        ++in_unit_;
        return true;
      }
      close_shard();
      ++unit_;
      in_unit_ = 0;
    }
    return false;
  }

 private:
  struct Member {
    std::string key, ext;
    std::vector<uint8_t> bytes;
    bool read = false;  // bytes were read (not skipped)
  };

  bool want(int64_t ordinal) const { return ordinal >= keep_from_ || (keep_ && keep_->count(ordinal)); }

  void close_shard() {
    if (archive_) archive_read_free(archive_);
    archive_ = nullptr;
    pending_ = false;
    shard_done_ = false;
  }

  // The next member worth looking at (image, .txt or .cls); false at the end of the shard or
  // on corruption (warned; the rest of the shard is dropped).
  bool next_member(const std::string& shard, bool& corrupt) {
    archive_entry* e = nullptr;
    while (true) {
      int rc = archive_read_next_header(archive_, &e);
      if (rc == ARCHIVE_EOF) return false;
      if (rc == ARCHIVE_RETRY) continue;
      if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        warn_(shard, std::string("corrupt tar shard, its remaining members are skipped: ") + archive_error_string(archive_));
        corrupt = true;
        return false;
      }
      if (archive_entry_filetype(e) != AE_IFREG) continue;
      const char* p = archive_entry_pathname(e);
      if (!p) continue;
      const std::string name = p;
      const size_t slash = name.rfind('/');
      const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
      if (dot == std::string::npos) continue;
      // "key.seg.jpg" is field "seg.jpg" of sample "key"; its last extension says what it is.
      std::string ext = lower(name.substr(dot + 1));
      ext = ext.substr(ext.rfind('.') == std::string::npos ? 0 : ext.rfind('.') + 1);
      const bool image = ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp" || ext == "bmp" || ext == "gif";
      if (!image && ext != "txt" && ext != "cls") continue;
      pend_.key = name.substr(0, dot);
      pend_.ext = image ? "image" : ext;
      pend_.bytes.clear();
      pend_size_ = archive_entry_size(e);
      pend_name_ = name;
      return true;
    }
  }

  bool read_pending_data(const std::string& shard, bool keep) {
    pend_.read = keep;
    if (!keep) {
      if (archive_read_data_skip(archive_) == ARCHIVE_OK) return true;
      report(shard);
      return false;
    }
    if (pend_size_ < 0 || pend_size_ > (la_int64_t(1) << 31)) {
      warn_(shard, "member " + pend_name_ + " has a bad size; the rest of the shard is skipped");
      return false;
    }
    pend_.bytes.resize(size_t(pend_size_));
    la_int64_t got = 0;
    while (got < pend_size_) {
      const la_ssize_t r = archive_read_data(archive_, pend_.bytes.data() + got, size_t(pend_size_ - got));
      if (r < 0) {
        report(shard);
        return false;
      }
      if (r == 0) break;
      got += r;
    }
    if (got != pend_size_) {
      warn_(shard, "member " + pend_name_ + " is truncated; the rest of the shard is skipped");
      return false;
    }
    return true;
  }

  void report(const std::string& shard) {
    const char* m = archive_error_string(archive_);
    warn_(shard, std::string("corrupt tar shard, its remaining members are skipped: ") + (m ? m : "read error"));
  }

  static void apply(Member& m, RawItem& out) {
    if (m.ext == "image") {
      if (!out.has_image) out.bytes = std::move(m.bytes);  // a second image of one key is ignored
      out.has_image = true;
    } else if (m.ext == "txt") {
      out.has_caption = true;
      out.caption.assign(m.bytes.begin(), m.bytes.end());
    } else if (!m.read) {
      out.label = 0;  // header-only replay: that there is a label is all that matters
    } else if (!parse_label(std::string(m.bytes.begin(), m.bytes.end()), out.label)) {
      out.label = -1;
      out.bad_label = true;
    }
  }

  bool read_shard_item(const Unit& u, RawItem& out) {
    const Source& src = sources_[size_t(u.source)];
    const std::string& shard = src.shards[size_t(u.shard)];
    const int64_t cap = src.shard_items.empty() ? -1 : src.shard_items[size_t(u.shard)];
    if (cap >= 0 && in_unit_ >= cap) return false;
    if (!archive_ && !shard_done_) {
      archive_ = archive_read_new();
      archive_read_support_format_tar(archive_);
      archive_read_support_format_gnutar(archive_);
      archive_read_support_filter_all(archive_);
      if (archive_read_open_filename(archive_, shard.c_str(), 1 << 16) != ARCHIVE_OK) {
        const std::string m = archive_error_string(archive_) ? archive_error_string(archive_) : "open failed";
        close_shard();
        throw Error(shard + ": cannot open tar shard: " + m);
      }
    }
    if (shard_done_) return false;
    const int64_t ord = count_;
    const bool keep = want(ord);
    bool open = false;
    while (true) {
      if (!pending_) {
        bool corrupt = false;
        if (!next_member(shard, corrupt)) {
          shard_done_ = true;
          if (corrupt) return false;  // the open item may be incomplete: dropped
          return open;
        }
        const bool same = open && pend_.key == key_;
        if (!read_pending_data(shard, same ? keep : want(open ? ord + 1 : ord))) {
          shard_done_ = true;
          return false;
        }
        pending_ = true;
      }
      if (!open) {
        open = true;
        key_ = pend_.key;
        out = RawItem{};
        out.source = u.source;
        out.id = shard + ":" + key_;
      } else if (pend_.key != key_) {
        return true;  // the pending member starts the next item
      }
      apply(pend_, out);
      pending_ = false;
    }
  }

  const std::vector<Source>& sources_;
  const IndexSpace& space_;
  const Order* order_;
  std::vector<Unit> units_;
  WarnFn warn_;
  const std::unordered_set<int64_t>* keep_ = nullptr;
  int64_t keep_from_ = 0;
  size_t unit_ = 0;
  int64_t in_unit_ = 0;
  int64_t count_ = 0;
  archive* archive_ = nullptr;
  bool shard_done_ = false;
  bool pending_ = false;
  Member pend_;
  la_int64_t pend_size_ = 0;
  std::string pend_name_, key_;
};

// Result of one ticket, as the consumer reassembles them.
struct Result {
  enum Kind { Sample, EpochEnd, Corrupt, Empty } kind = Sample;
  int64_t epoch = 0;
  std::string id, message;
  std::vector<float> pixels;
  std::vector<int32_t> ids;
  int label = -1;
  std::string caption;
};

struct Ticket {
  bool epoch_end = false;
  int64_t epoch = 0;
  RawItem item;
};

constexpr int64_t kChunk = 1024;  // indexable samples per unit when mixed with shards

}  // namespace

// ---- the loader -------------------------------------------------------------------------------

struct PairLoader::Impl {
  std::string spec;
  PairSourceOptions source_options;
  LoaderOptions opt;
  clip::Tokenizer tokenizer;
  std::vector<Source> sources;
  std::vector<std::string> classnames;
  IndexSpace space;
  std::vector<Unit> shard_units;  // every shard of every stream source, in spec order
  int64_t epoch_size = 0;         // -1: unknown

  // The sequencer of the current epoch (guarded by prod_mu while workers run).
  class Sequencer;
  std::unique_ptr<Sequencer> seq;
  int64_t seq_epoch = 0;

  // Pipeline state.
  std::mutex prod_mu;  // the sequencer: one producer at a time, in ticket order
  std::mutex mu;       // everything below
  std::condition_variable cv_ready, cv_space;
  std::vector<std::thread> threads;
  bool stop = false;
  std::exception_ptr error;
  int64_t next_ticket = 0, consume_ticket = 0;
  std::map<int64_t, Result> results;

  // Consumer state (the caller's thread).
  LoaderPosition pos;
  LoaderStats stats;
  bool epoch_from_start = true;
  int64_t epoch_items = 0, epoch_batches = 0;

  std::mutex warn_mu;
  std::unordered_set<std::string> warned;

  Impl(const std::string& spec_, const PairSourceOptions& so, const clip::Tokenizer& tok, const LoaderOptions& o)
      : spec(spec_), source_options(so), opt(o), tokenizer(tok) {}

  void warn(const std::string& id, const std::string& message) {
    std::lock_guard<std::mutex> lk(warn_mu);
    if (!warned.insert(id).second) return;
    // Decoder messages already start with the file's name.
    const bool named = message.compare(0, id.size() + 2, id + ": ") == 0;
    std::fprintf(stderr, "warning: skipped %s: %s\n", id.c_str(), message.c_str() + (named ? id.size() + 2 : 0));
  }
  WarnFn warn_fn() {
    return [this](const std::string& id, const std::string& m) { warn(id, m); };
  }

  int64_t window() const { return (std::max(opt.prefetch_batches, 0) + 1) * opt.batch_size; }
  std::unique_ptr<Sequencer> make_sequencer(int64_t epoch, int64_t skip);
  Ticket produce();
  Result process(Ticket& t) const;
  Result take();
  void start_workers();
  void stop_workers();
  void worker();
  void open_sources();
};

// The order of one epoch's raw items.
class PairLoader::Impl::Sequencer {
 public:
  Sequencer(Impl& L, int64_t epoch)
      : L_(L), order_(L.space.total(), L.opt.shuffle, stream_seed(L.opt.seed, kOrder, epoch)) {
    if (L.shard_units.empty()) return;  // indexable only: a permutation, nothing more
    std::vector<Unit> units = L.shard_units;
    for (int64_t b = 0; b < L.space.total(); b += kChunk) {
      Unit u;
      u.begin = b;
      u.end = std::min(L.space.total(), b + kChunk);
      units.push_back(u);
    }
    if (L.opt.shuffle) {
      Rng r(stream_seed(L.opt.seed, kUnits, epoch));
      fisher_yates(units, r);
    }
    reader_ = std::make_unique<ItemReader>(L.sources, L.space, &order_, std::move(units), L.warn_fn());
    rng_ = Rng(stream_seed(L.opt.seed, kBuffer, epoch));
    cap_ = L.opt.shuffle ? size_t(std::max<int64_t>(L.opt.shuffle_buffer, 1)) : 1;
  }

  bool next(RawItem& out) {
    if (!reader_) {
      if (pos_ >= order_.size()) return false;
      const int64_t g = order_[pos_++];
      out = RawItem{};
      std::tie(out.source, out.entry) = L_.space.locate(g);
      out.uid = uint64_t(g);
      return true;
    }
    // Fill to capacity, then hand out a random slot: which input position leaves when
    // depends only on counts, which is what makes header-only replay exact.
    while (buf_.size() < cap_ && !input_done_) {
      RawItem it;
      if (reader_->next(it))
        buf_.push_back(std::move(it));
      else
        input_done_ = true;
    }
    if (buf_.empty()) return false;
    const size_t j = size_t(rng_.below(buf_.size()));
    out = std::move(buf_[j]);
    if (j + 1 != buf_.size()) buf_[j] = std::move(buf_.back());
    buf_.pop_back();
    return true;
  }

  // Moves past the first k items without reading (let alone decoding) what they hold.
  void skip(int64_t k, int64_t epoch) {
    if (!reader_) {
      pos_ = std::min(k, order_.size());
      return;
    }
    Sequencer sim(L_, epoch);
    sim.reader_->set_keep(nullptr, INT64_MAX);
    RawItem tmp;
    for (int64_t i = 0; i < k && sim.next(tmp); ++i) {
    }
    std::unordered_map<int64_t, size_t> slot;
    std::unordered_set<int64_t> keep;
    for (size_t i = 0; i < sim.buf_.size(); ++i) {
      slot[sim.buf_[i].ordinal] = i;
      keep.insert(sim.buf_[i].ordinal);
    }
    const int64_t read = sim.reader_->count();
    // Items at or past `read` are read normally (the next item's first member may already be
    // pending when the replay stops).
    reader_->set_keep(&keep, read);
    buf_.assign(sim.buf_.size(), RawItem{});
    for (int64_t i = 0; i < read; ++i) {
      RawItem it;
      if (!reader_->next(it)) throw Error(L_.spec + ": the shards changed while resuming (fewer items on re-reading)");
      auto f = slot.find(it.ordinal);
      if (f != slot.end()) buf_[f->second] = std::move(it);
    }
    reader_->set_keep(nullptr, 0);
    rng_ = sim.rng_;
    input_done_ = sim.input_done_;
  }

 private:
  Impl& L_;
  Order order_;
  int64_t pos_ = 0;
  std::unique_ptr<ItemReader> reader_;
  std::vector<RawItem> buf_;
  Rng rng_;
  size_t cap_ = 1;
  bool input_done_ = false;
};

std::unique_ptr<PairLoader::Impl::Sequencer> PairLoader::Impl::make_sequencer(int64_t epoch, int64_t skip) {
  auto s = std::make_unique<Sequencer>(*this, epoch);
  if (skip > 0) s->skip(skip, epoch);
  return s;
}

void PairLoader::Impl::open_sources() {
  const auto parts = split_spec(spec);
  if (parts.empty()) throw Error("no training data given (empty source spec)");
  bool need_templates = false;
  for (const auto& part : parts) {
    Source s;
    if (fs::is_directory(part)) {
      Dataset d = open_class_folders(part);
      if (source_options.limit > 0 && int64_t(d.samples.size()) > source_options.limit)
        d.samples.resize(size_t(source_options.limit));
      s = from_dataset(std::move(d), part);
    } else if (is_stream_spec(part)) {
      s.spec = part;
      s.stream = true;
      s.shards = expand_shards(part);
      if (s.shards.empty()) throw Error(part + ": no shards");
      for (auto& sh : s.shards)
        if (!fs::is_regular_file(sh)) throw Error(sh + ": no such tar shard");
    } else {
      const std::string l = lower(part);
      if (!fs::exists(part)) throw Error(part + ": no such file or folder");
      if (ends_with(l, ".csv") || ends_with(l, ".tsv") || ends_with(l, ".txt")) {
        s = open_csv_source(part, source_options);
      } else if (l.find("idx3") != std::string::npos) {
        DatasetOptions d;
        d.limit = source_options.limit;
        s = from_dataset(open_idx(part, d), part);
      } else {
        throw Error(part + ": unknown source kind (expected a .csv/.tsv, .tar shards, a folder of class folders or an "
                    "IDX images file)");
      }
    }
    if (!s.stream && !s.captioned) need_templates = true;
    if (!s.stream && s.entries.empty()) throw Error(part + ": no samples");
    sources.push_back(std::move(s));
  }

  // Streams: look at the first item (captions or only labels?), and apply `limit` by counting
  // items in natural shard order, headers only.
  for (size_t i = 0; i < sources.size(); ++i) {
    Source& s = sources[i];
    if (!s.stream) continue;
    std::vector<Unit> units;
    for (size_t k = 0; k < s.shards.size(); ++k) units.push_back(Unit{int(i), int64_t(k), 0, 0});
    {
      ItemReader r(sources, space, nullptr, {units[0]}, warn_fn());
      RawItem first;
      if (r.next(first) && !first.has_caption && first.label >= 0) need_templates = true;
    }
    if (!source_options.classnames.empty()) s.classnames = source_options.classnames;
    if (source_options.limit > 0) {
      std::vector<int64_t> per_shard(s.shards.size(), 0);
      int64_t n = 0;
      {
        ItemReader r(sources, space, nullptr, units, warn_fn());
        r.set_keep(nullptr, INT64_MAX);
        RawItem it;
        while (n < source_options.limit && r.next(it)) {
          ++per_shard[size_t(r.unit_index())];
          ++n;
        }
      }
      s.shard_items = std::move(per_shard);
      s.known_size = n;
      if (n == 0) throw Error(s.spec + ": no samples in the shards");
      while (!units.empty() && s.shard_items[size_t(units.back().shard)] == 0) units.pop_back();
    }
    shard_units.insert(shard_units.end(), units.begin(), units.end());
  }
  for (const std::string& t : source_options.templates) (void)format_prompt(t, "x");  // {} or {c}, up front
  if (need_templates && source_options.templates.empty())
    throw Error(spec + ": a labelled source (class folders, IDX, a label CSV or shards with .cls only) needs caption "
                "templates such as \"a photo of a {}.\"");

  // Class names: a source's own (or the override), merged across sources by name.
  std::unordered_map<std::string, int> merged;
  for (auto& s : sources) {
    if (s.stream && s.classnames.empty()) continue;
    const bool labelled =
        s.stream || std::any_of(s.entries.begin(), s.entries.end(), [](const Entry& e) { return e.label >= 0; });
    if (!labelled) continue;
    if (!source_options.classnames.empty()) {
      int n = int(s.classnames.size());
      for (auto& e : s.entries) n = std::max(n, e.label + 1);
      if (int(source_options.classnames.size()) < n)
        throw Error(s.spec + ": " + std::to_string(source_options.classnames.size()) +
                    " class names given for " + std::to_string(n) + " classes");
      s.classnames = source_options.classnames;
    }
    for (auto& name : s.classnames) {
      auto [it, inserted] = merged.emplace(name, int(classnames.size()));
      if (inserted) classnames.push_back(name);
      s.label_map.push_back(it->second);
    }
  }

  int64_t total = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (sources[i].stream) continue;
    space.sources.push_back(int(i));
    space.offsets.push_back(total);
    total += int64_t(sources[i].entries.size());
  }
  space.offsets.push_back(total);
  if (total > int64_t(UINT32_MAX)) throw Error(spec + ": more than 2^32 indexable samples");
  epoch_size = total;
  for (auto& s : sources)
    if (s.stream) epoch_size = (epoch_size < 0 || s.known_size < 0) ? -1 : epoch_size + s.known_size;
}

Ticket PairLoader::Impl::produce() {
  Ticket t;
  if (!seq) seq = make_sequencer(seq_epoch, 0);
  if (seq->next(t.item)) {
    t.epoch = seq_epoch;
    return t;
  }
  t.epoch_end = true;
  t.epoch = seq_epoch++;
  seq.reset();  // the next epoch's order is made when its first item is asked for
  return t;
}

Result PairLoader::Impl::process(Ticket& t) const {
  Result r;
  r.epoch = t.epoch;
  if (t.epoch_end) {
    r.kind = Result::EpochEnd;
    return r;
  }
  RawItem& it = t.item;
  const Source& src = sources[size_t(it.source)];
  Rng rng(stream_seed(opt.seed, kSample, t.epoch, it.uid));

  int label = -1;
  bool has_caption = false;
  std::string caption;
  const Entry* entry = nullptr;
  if (it.entry >= 0) {
    entry = &src.entries[size_t(it.entry)];
    r.id = src.entry_id(it.entry);
    label = entry->label;
    has_caption = src.captioned;
    if (has_caption) caption = entry->caption;
  } else {
    r.id = it.id;
    if (it.bad_label) {
      r.kind = Result::Corrupt;
      r.message = "the .cls member is not a class index";
      return r;
    }
    label = it.label;
    has_caption = it.has_caption;
    caption = std::move(it.caption);
  }
  if (!has_caption && label >= 0 && !source_options.templates.empty()) {
    const std::string& tpl = source_options.templates[size_t(rng.below(source_options.templates.size()))];
    const std::string name = size_t(label) < src.classnames.size() ? src.classnames[size_t(label)] : std::to_string(label);
    caption = format_prompt(tpl, name);  // checked when the loader was made
  }
  r.label = label >= 0 && size_t(label) < src.label_map.size() ? src.label_map[size_t(label)] : label;
  if (blank(caption)) {
    r.kind = Result::Empty;
    r.message = has_caption ? "empty caption" : "no caption and no class label";
    return r;
  }
  const int S = opt.preprocess.image_size;
  try {
    clip::Image img;
    if (entry && entry->array >= 0) {
      // IDX pixels are held decoded; the copy is small (28x28) next to the preprocessing.
      img = src.arrays[size_t(entry->array)];
    } else if (entry) {
      if (entry->path.empty()) throw Error("empty image path");
      img = clip::decode_image_file(entry->path, opt.decode);
    } else {
      if (!it.has_image) throw Error("no image member (.jpg, .png, .webp ...) for this key");
      img = clip::decode_image_memory(it.bytes.data(), it.bytes.size(), it.id, opt.decode);
      std::vector<uint8_t>().swap(it.bytes);
    }
    r.pixels.resize(size_t(3) * S * S);
    if (opt.augment) {
      std::mt19937_64 g(rng.next_u64());
      clip::random_resized_crop(img, opt.preprocess, g, r.pixels.data(), {opt.crop_scale_min, opt.crop_scale_max});
      if (opt.horizontal_flip && (rng.next_u64() >> 63)) {
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < S; ++y) {
            float* row = r.pixels.data() + (size_t(c) * S + y) * S;
            std::reverse(row, row + S);
          }
      }
      if (opt.photometric.any()) {
        Rng photometric_rng(rng.next_u64());
        clip::data::apply_photometric(r.pixels.data(), S, opt.preprocess.mean.data(), opt.preprocess.std.data(),
                                      opt.photometric, photometric_rng);
      }
    } else {
      clip::preprocess_image(img, opt.preprocess, r.pixels.data());
    }
  } catch (const std::exception& e) {
    r.kind = Result::Corrupt;
    r.message = e.what();
    r.pixels.clear();
    return r;
  }
  try {
    r.ids = tokenizer.tokenize({caption}, opt.context_length, /*truncate=*/true);
  } catch (const std::exception& e) {
    r.kind = Result::Empty;
    r.message = std::string("caption cannot be tokenized: ") + e.what();
    r.pixels.clear();
    return r;
  }
  r.caption = std::move(caption);
  return r;
}

void PairLoader::Impl::worker() {
  // An exception that is not a bad sample (a broken source, out of memory): the loader stops,
  // and whoever waits wakes up to rethrow it.
  auto fail = [this](std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(mu);
    error = std::move(e);
    cv_ready.notify_all();
    cv_space.notify_all();
  };
  while (true) {
    Ticket t;
    int64_t ticket;
    {
      std::lock_guard<std::mutex> plk(prod_mu);
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_space.wait(lk, [&] { return stop || error || next_ticket < consume_ticket + window(); });
        if (stop || error) return;
        ticket = next_ticket;
      }
      try {
        t = produce();
      } catch (...) {
        fail(std::current_exception());
        return;
      }
      std::lock_guard<std::mutex> lk(mu);
      ++next_ticket;
    }
    Result r;
    try {
      test_point("decode");
      r = process(t);
    } catch (...) {  // not a bad sample (those are results): e.g. out of memory
      fail(std::current_exception());
      return;
    }
    std::lock_guard<std::mutex> lk(mu);
    results.emplace(ticket, std::move(r));
    cv_ready.notify_all();
  }
}

void PairLoader::Impl::start_workers() {
  if (!threads.empty() || opt.workers <= 0) return;
  stop = false;
  for (int i = 0; i < opt.workers; ++i) threads.emplace_back([this] { worker(); });
}

void PairLoader::Impl::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu);
    stop = true;
  }
  cv_space.notify_all();
  for (auto& t : threads) t.join();
  threads.clear();
  stop = false;
}

Result PairLoader::Impl::take() {
  const int64_t want = consume_ticket;
  if (opt.workers <= 0) {
    Ticket t = produce();
    ++consume_ticket;
    return process(t);
  }
  start_workers();
  std::unique_lock<std::mutex> lk(mu);
  // A failed worker may leave its ticket unfilled: the error (always fatal) is raised as soon
  // as it is known rather than waiting for a result that may never come.
  cv_ready.wait(lk, [&] { return results.count(want) || error; });
  auto f = results.find(want);
  if (f == results.end()) std::rethrow_exception(error);
  Result r = std::move(f->second);
  results.erase(f);
  ++consume_ticket;
  lk.unlock();
  cv_space.notify_all();
  return r;
}

PairLoader::PairLoader(const std::string& spec, const PairSourceOptions& source, const clip::Tokenizer& tokenizer,
                       const LoaderOptions& options)
    : impl_(std::make_unique<Impl>(spec, source, tokenizer, options)) {
  const LoaderOptions& o = options;
  if (o.batch_size < 1) throw Error("loader: batch_size must be >= 1");
  if (o.context_length < 2) throw Error("loader: context_length must be >= 2");
  if (o.preprocess.image_size < 1) throw Error("loader: image_size must be >= 1");
  if (o.augment && !(o.crop_scale_min > 0 && o.crop_scale_min <= o.crop_scale_max && o.crop_scale_max <= 1))
    throw Error("loader: crop scale must satisfy 0 < min <= max <= 1");
  if (o.augment) o.photometric.validate(o.preprocess.image_size);
  impl_->open_sources();
  impl_->stats.epoch_size = impl_->epoch_size;
}

PairLoader::~PairLoader() { impl_->stop_workers(); }

Batch PairLoader::next() {
  Impl& L = *impl_;
  const int64_t B = L.opt.batch_size;
  const size_t per = size_t(3) * L.opt.preprocess.image_size * L.opt.preprocess.image_size;
  const size_t ctx = size_t(L.opt.context_length);
  Batch b;
  b.pixels.resize(size_t(B) * per);
  b.ids.resize(size_t(B) * ctx);
  b.labels.reserve(size_t(B));
  b.captions.reserve(size_t(B));
  int64_t n = 0;
  while (n < B) {
    Result r = L.take();
    if (r.kind == Result::EpochEnd) {
      if (L.epoch_from_start && L.epoch_items == 0) throw Error(L.spec + ": no samples");
      if (!L.opt.drop_last && n > 0) {
        L.pos = {r.epoch + 1, 0};
        L.epoch_from_start = true;
        L.epoch_items = L.epoch_batches = 0;
        break;
      }
      if (L.epoch_from_start && L.epoch_batches == 0)
        throw Error(L.spec + ": an epoch has " + std::to_string(n) + " usable samples (of " +
                    std::to_string(L.epoch_items) + "), fewer than a batch of " + std::to_string(B));
      n = 0;  // drop_last: the remainder is dropped
      b.labels.clear();
      b.captions.clear();
      L.pos = {r.epoch + 1, 0};
      L.epoch_from_start = true;
      L.epoch_items = L.epoch_batches = 0;
      continue;
    }
    L.pos = {r.epoch, L.pos.samples + 1};
    ++L.epoch_items;
    if (r.kind != Result::Sample) {
      ++(r.kind == Result::Corrupt ? L.stats.skipped_corrupt : L.stats.skipped_empty);
      L.warn(r.id, r.message);
      continue;
    }
    std::memcpy(b.pixels.data() + size_t(n) * per, r.pixels.data(), per * sizeof(float));
    std::memcpy(b.ids.data() + size_t(n) * ctx, r.ids.data(), ctx * sizeof(int32_t));
    b.labels.push_back(r.label);
    b.captions.push_back(std::move(r.caption));
    ++n;
  }
  if (n < B) {
    b.pixels.resize(size_t(n) * per);
    b.ids.resize(size_t(n) * ctx);
  } else {
    ++L.epoch_batches;
  }
  b.size = n;
  b.end = L.pos;
  L.stats.delivered += n;
  return b;
}

LoaderPosition PairLoader::position() const { return impl_->pos; }

void PairLoader::seek(const LoaderPosition& p) {
  Impl& L = *impl_;
  if (p.epoch < 0 || p.samples < 0) throw Error("loader: negative position");
  if (L.epoch_size >= 0 && p.samples > L.epoch_size)
    throw Error("loader: position " + std::to_string(p.samples) + " is past the end of an epoch of " +
                std::to_string(L.epoch_size) + " samples");
  L.stop_workers();
  L.results.clear();
  L.error = nullptr;
  L.next_ticket = L.consume_ticket = 0;
  L.seq_epoch = p.epoch;
  L.seq = L.make_sequencer(p.epoch, p.samples);
  L.pos = p;
  L.epoch_from_start = p.samples == 0;
  L.epoch_items = L.epoch_batches = 0;
}

LoaderStats PairLoader::stats() const { return impl_->stats; }

const std::vector<std::string>& PairLoader::classnames() const { return impl_->classnames; }

int64_t PairLoader::batches_per_epoch() const {
  const Impl& L = *impl_;
  if (L.epoch_size < 0) return -1;
  const int64_t B = L.opt.batch_size;
  return L.opt.drop_last ? L.epoch_size / B : (L.epoch_size + B - 1) / B;
}

}  // namespace clip::data
