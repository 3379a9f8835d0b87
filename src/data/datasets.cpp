#include "data/datasets.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <unordered_map>

#include "core/error.h"
#include "core/io.h"
#include "data/tar_reader.h"
#include "vision/arrays.h"

namespace clip::data {

namespace fs = std::filesystem;

uint64_t fnv1a64(const void* data, size_t size, uint64_t h) {
  auto p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

static std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_file_name(const std::string& name) {
  const std::string ext = lower(fs::path(name).extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp" || ext == ".gif";
}

int Dataset::num_classes() const {
  int n = int(classnames.size());
  for (auto& s : samples) n = std::max(n, s.label + 1);
  return n;
}

bool Dataset::has_labels() const {
  if (samples.empty()) return false;
  for (auto& s : samples)
    if (s.label < 0) return false;
  return true;
}

bool Dataset::has_captions() const {
  if (samples.empty()) return false;
  for (auto& s : samples)
    if (s.captions.empty()) return false;
  return true;
}

clip::Image Dataset::load_image(size_t i) const {
  const Sample& s = samples.at(i);
  if (s.array_index >= 0) return arrays.at(size_t(s.array_index));
  if (!s.encoded.empty()) return clip::decode_image_memory(s.encoded.data(), s.encoded.size(), s.id);
  if (!s.path.empty()) return clip::decode_image_file(s.path);
  throw Error(s.id + ": sample has no image");
}

uint64_t Dataset::fingerprint() const {
  uint64_t h = fnv1a64(source);
  for (auto& c : classnames) h = fnv1a64(c + "\n", h);
  for (auto& s : samples) {
    h = fnv1a64(s.id, h);
    h = fnv1a64(&s.label, sizeof s.label, h);
    for (auto& c : s.captions) h = fnv1a64(c, h);
    if (!s.path.empty()) {
      std::error_code ec;
      const auto size = fs::file_size(s.path, ec);
      const auto mtime = fs::last_write_time(s.path, ec).time_since_epoch().count();
      h = fnv1a64(&size, sizeof size, h);
      h = fnv1a64(&mtime, sizeof mtime, h);
    } else if (!s.encoded.empty()) {
      h = fnv1a64(s.encoded.data(), s.encoded.size(), h);
    } else if (s.array_index >= 0) {
      auto& a = arrays[size_t(s.array_index)];
      h = fnv1a64(a.pixels.data(), a.pixels.size(), h);
    }
  }
  return h;
}

static void apply_limit(Dataset& d, int64_t limit, uint64_t seed) {
  const size_t n = d.samples.size();
  if (limit <= 0 || int64_t(n) <= limit) return;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x5EEDu);
  auto shuffle = [&rng](std::vector<size_t>& v) {  // Fisher-Yates: the same order on every platform
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng() % i)]);
  };
  std::vector<size_t> chosen;
  const bool labelled = d.has_labels();
  if (labelled) {
    std::map<int, std::vector<size_t>> by_class;
    for (size_t i = 0; i < n; ++i) by_class[d.samples[i].label].push_back(i);
    // Each class's share, floor(limit * n_c / n), then the remainder to the largest fractions.
    std::vector<std::pair<double, int>> fractions;
    std::map<int, size_t> take;
    size_t given = 0;
    for (auto& [label, idx] : by_class) {
      const double exact = double(limit) * double(idx.size()) / double(n);
      take[label] = size_t(exact);
      given += take[label];
      fractions.push_back({exact - std::floor(exact), label});
    }
    std::stable_sort(fractions.begin(), fractions.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t k = 0; given < size_t(limit) && k < fractions.size(); ++k, ++given) ++take[fractions[k].second];
    for (auto& [label, idx] : by_class) {
      shuffle(idx);
      chosen.insert(chosen.end(), idx.begin(), idx.begin() + long(std::min(take[label], idx.size())));
    }
  } else {
    chosen.resize(n);
    for (size_t i = 0; i < n; ++i) chosen[i] = i;
    shuffle(chosen);
    chosen.resize(size_t(limit));
  }
  std::sort(chosen.begin(), chosen.end());
  std::vector<Sample> kept;
  kept.reserve(chosen.size());
  for (size_t i : chosen) kept.push_back(std::move(d.samples[i]));
  d.samples = std::move(kept);
  d.subset_note = std::string(labelled ? "a class-stratified" : "a uniform") + " random subset of " +
                  std::to_string(d.samples.size()) + " of the " + std::to_string(n) + " samples (seed " +
                  std::to_string(seed) + ")";
}

Dataset open_class_folders(const std::string& root) {
  if (!fs::is_directory(root)) throw Error(root + ": not a folder");
  Dataset d;
  d.source = root;
  d.name = fs::path(root).lexically_normal().filename().string();
  if (d.name.empty() || d.name == ".") d.name = fs::path(root).lexically_normal().parent_path().filename().string();
  std::vector<std::string> classes;
  for (auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string()[0] != '.') classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw Error(root + ": no class folders (expected root/<class>/<image>)");
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> files;
    for (auto& e : fs::recursive_directory_iterator(fs::path(root) / classes[c]))
      if (e.is_regular_file() && is_image_file_name(e.path().string())) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      Sample s;
      s.id = fs::relative(f, root).string();
      s.path = f;
      s.label = int(c);
      d.samples.push_back(std::move(s));
    }
  }
  d.classnames = std::move(classes);
  if (d.samples.empty()) throw Error(root + ": no images in the class folders");
  return d;
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& name, char separator) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  size_t i = 0, line = 1;
  const size_t n = text.size();
  if (n >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF)
    i = 3;  // UTF-8 byte-order mark
  bool any = false;  // the current row has content
  while (i < n) {
    const char c = text[i];
    if (c == '"' && field.empty()) {
      const size_t start_line = line;
      ++i;
      while (true) {
        if (i >= n) throw Error(name + ":" + std::to_string(start_line) + ": unterminated quoted field");
        if (text[i] == '"') {
          if (i + 1 < n && text[i + 1] == '"') { field += '"'; i += 2; continue; }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field += text[i++];
      }
      if (i < n && text[i] != separator && text[i] != '\n' && text[i] != '\r')
        throw Error(name + ":" + std::to_string(line) + ": text after a closing quote");
      any = true;
      continue;
    }
    if (c == separator) { row.push_back(std::move(field)); field.clear(); any = true; ++i; continue; }
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
      if (any || !field.empty()) { row.push_back(std::move(field)); rows.push_back(std::move(row)); }
      row.clear();
      field.clear();
      any = false;
      continue;
    }
    field += c;
    any = true;
    ++i;
  }
  if (any || !field.empty()) { row.push_back(std::move(field)); rows.push_back(std::move(row)); }
  return rows;
}

const std::string& csv_field(const std::vector<std::vector<std::string>>& rows, size_t r,
                             int column, const std::string& path) {
  const auto& row = rows[r];
  if (column < 0 || size_t(column) >= row.size())
    throw Error(path + ": row " + std::to_string(r + 1) + " has " + std::to_string(row.size()) +
                " fields, fewer than the header's " + std::to_string(rows[0].size()));
  return row[size_t(column)];
}

static int find_column(const std::vector<std::string>& header, std::initializer_list<const char*> names) {
  for (const char* want : names)
    for (size_t i = 0; i < header.size(); ++i)
      if (lower(header[i]) == want) return int(i);
  return -1;
}

Dataset open_csv(const std::string& path, const DatasetOptions& options) {
  auto rows = parse_csv(read_text_file(path), path);
  if (rows.empty()) throw Error(path + ": empty CSV");
  const auto header = rows[0];
  const int ci = find_column(header, {"path", "image", "filepath", "filename", "file", "image_path"});
  const int cl = find_column(header, {"label", "target", "class_id"});
  const int cn = find_column(header, {"class", "classname", "class_name"});
  const int cc = find_column(header, {"caption", "text", "title"});
  if (ci < 0) throw Error(path + ": no image column in the header (path, image, filepath, filename, file or image_path)");
  if (cl < 0 && cc < 0 && cn < 0) throw Error(path + ": the header has neither a label/class nor a caption column");
  Dataset d;
  d.source = path;
  d.name = fs::path(path).stem().string();
  const fs::path root = options.root.empty() ? fs::path(path).parent_path() : fs::path(options.root);
  std::unordered_map<std::string, size_t> by_image;
  std::map<std::string, int> class_ids;  // class name -> label when there is no label column
  std::map<int, std::string> names;       // label -> class name
  for (size_t r = 1; r < rows.size(); ++r) {
    auto field = [&](int c) -> const std::string& { return csv_field(rows, r, c, path); };
    const std::string& image = field(ci);
    if (image.empty()) throw Error(path + ": row " + std::to_string(r + 1) + " has an empty image path");
    int label = -1;
    if (cl >= 0) {
      const std::string& v = field(cl);
      size_t used = 0;
      try {
        label = std::stoi(v, &used);
      } catch (...) {
        used = 0;
      }
      if (used != v.size() || label < 0)
        throw Error(path + ": row " + std::to_string(r + 1) + ": label \"" + v + "\" is not a non-negative integer");
    }
    if (cn >= 0) {
      const std::string& name = field(cn);
      if (cl < 0) {
        class_ids.emplace(name, -1);  // labels assigned below: sorted names, as ImageFolder
      } else {
        auto [it, inserted] = names.emplace(label, name);
        if (!inserted && it->second != name)
          throw Error(path + ": row " + std::to_string(r + 1) + ": label " + std::to_string(label) + " is both \"" +
                      it->second + "\" and \"" + name + "\"");
      }
    }
    const fs::path p = fs::path(image).is_absolute() ? fs::path(image) : root / image;
    auto it = by_image.find(image);
    if (cc >= 0 && it != by_image.end()) {  // another caption of an image already seen
      d.samples[it->second].captions.push_back(field(cc));
      continue;
    }
    Sample s;
    s.id = image;
    s.path = p.string();
    s.label = label;
    if (cc >= 0) s.captions.push_back(field(cc));
    by_image.emplace(image, d.samples.size());
    d.samples.push_back(std::move(s));
  }
  if (cn >= 0 && cl < 0) {
    int k = 0;
    for (auto& [name, id] : class_ids) { id = k++; d.classnames.push_back(name); }
    size_t si = 0;
    std::unordered_map<std::string, bool> seen;
    for (size_t r = 1; r < rows.size(); ++r) {
      const std::string& image = rows[r][size_t(ci)];
      if (cc >= 0 && seen.count(image)) continue;
      seen[image] = true;
      d.samples[si++].label = class_ids.at(rows[r][size_t(cn)]);
    }
  } else if (!names.empty()) {
    const int n = names.rbegin()->first + 1;
    d.classnames.assign(size_t(n), "");
    for (auto& [label, name] : names) d.classnames[size_t(label)] = name;
  }
  if (d.samples.empty()) throw Error(path + ": no rows after the header");
  apply_limit(d, options.limit, options.limit_seed);
  return d;
}

Dataset open_idx(const std::string& images_path, const DatasetOptions& options) {
  std::string labels = options.labels_path;
  if (labels.empty()) {
    const std::string file = fs::path(images_path).filename().string();
    const auto pos = file.find("images-idx3");
    if (pos == std::string::npos)
      throw Error(images_path + ": cannot find the labels file (name it with --labels)");
    labels = (fs::path(images_path).parent_path() / (file.substr(0, pos) + "labels-idx1" + file.substr(pos + 11))).string();
  }
  Dataset d;
  d.source = images_path;
  d.name = fs::path(images_path).filename().string();
  d.arrays = clip::read_idx_images(images_path);
  const auto y = clip::read_idx_labels(labels);
  if (y.size() < d.arrays.size())
    throw Error(labels + ": " + std::to_string(y.size()) + " labels for " + std::to_string(d.arrays.size()) +
                " images in " + images_path);
  for (size_t i = 0; i < d.arrays.size(); ++i) {
    Sample s;
    s.id = images_path + "#" + std::to_string(i);
    s.array_index = int64_t(i);
    s.label = y[i];
    d.samples.push_back(std::move(s));
  }
  int maxl = 0;
  for (auto& s : d.samples) maxl = std::max(maxl, s.label);
  for (int c = 0; c <= maxl; ++c) d.classnames.push_back(std::to_string(c));
  if (d.samples.empty()) throw Error(images_path + ": no images");
  apply_limit(d, options.limit, options.limit_seed);
  return d;
}

std::vector<std::string> expand_shards(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    // Commas inside braces are not separators here (only ranges are supported inside braces).
    std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    if (part.empty()) continue;
    const size_t lb = part.find('{'), rb = part.find('}');
    if (lb == std::string::npos || rb == std::string::npos || rb < lb) { out.push_back(part); continue; }
    const std::string inner = part.substr(lb + 1, rb - lb - 1);
    const size_t dots = inner.find("..");
    if (dots == std::string::npos) throw Error(spec + ": brace expression {" + inner + "} is not a range {a..b}");
    const std::string a = inner.substr(0, dots), b = inner.substr(dots + 2);
    long lo, hi;
    try {
      lo = std::stol(a);
      hi = std::stol(b);
    } catch (...) {
      throw Error(spec + ": brace range {" + inner + "} is not numeric");
    }
    if (hi < lo || hi - lo > 1000000) throw Error(spec + ": bad brace range {" + inner + "}");
    const size_t width = a.size();
    for (long v = lo; v <= hi; ++v) {
      std::string num = std::to_string(v);
      if (num.size() < width) num = std::string(width - num.size(), '0') + num;
      // Further braces in the suffix expand recursively.
      for (auto& rest : expand_shards(part.substr(rb + 1).empty() ? std::string("\x01") : part.substr(rb + 1)))
        out.push_back(part.substr(0, lb) + num + (rest == "\x01" ? "" : rest));
    }
  }
  return out;
}

Dataset open_webdataset(const std::vector<std::string>& shards) {
  if (shards.empty()) throw Error("webdataset: no shards");
  Dataset d;
  d.source = shards.size() == 1 ? shards[0] : shards[0] + " (+" + std::to_string(shards.size() - 1) + " shards)";
  d.name = fs::path(shards[0]).stem().string();
  for (auto& shard : shards) {
    TarReader tar(shard);
    std::unordered_map<std::string, size_t> index;  // key -> sample
    TarMember m;
    while (tar.next(m)) {
      const std::string& name = m.name;
      const size_t slash = name.rfind('/');
      const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
      if (dot == std::string::npos) continue;
      const std::string key = name.substr(0, dot), ext = lower(name.substr(dot + 1));
      const bool image = ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp" || ext == "bmp" || ext == "gif";
      if (!image && ext != "cls" && ext != "txt") continue;
      const std::string data = tar.read();
      std::vector<uint8_t> bytes(data.begin(), data.end());
      auto [it, inserted] = index.emplace(key, d.samples.size());
      if (inserted) {
        Sample s;
        s.id = shard + ":" + key;
        d.samples.push_back(std::move(s));
      }
      Sample& s = d.samples[it->second];
      if (image) {
        s.encoded = std::move(bytes);
      } else {
        std::string text(bytes.begin(), bytes.end());
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
        if (ext == "txt") {
          s.captions.push_back(text);
        } else {
          size_t used = 0;
          int v = -1;
          try {
            v = std::stoi(text, &used);
          } catch (...) {
            used = 0;
          }
          if (used != text.size() || v < 0) throw Error(shard + ": " + name + ": \"" + text + "\" is not a class index");
          s.label = v;
        }
      }
    }
  }
  // A key without an image (e.g. a stray .txt) cannot be evaluated.
  for (auto& s : d.samples)
    if (s.encoded.empty()) throw Error(s.id + ": sample has no image member");
  if (d.samples.empty()) throw Error(d.source + ": no samples in the shards");
  return d;
}

Dataset open_dataset(const std::string& spec, const DatasetOptions& options) {
  if (spec.empty()) throw Error("no dataset given");
  if (fs::is_directory(spec)) {
    Dataset d = open_class_folders(spec);
    apply_limit(d, options.limit, options.limit_seed);
    return d;
  }
  const std::string l = lower(spec);
  auto ends = [&](const char* suf) {
    const std::string s(suf);
    return l.size() >= s.size() && l.compare(l.size() - s.size(), s.size(), s) == 0;
  };
  if (l.find(".tar") != std::string::npos && (ends(".tar") || ends(".tar.gz") || ends(".tgz") || l.find('{') != std::string::npos || l.find(',') != std::string::npos)) {
    Dataset d = open_webdataset(expand_shards(spec));
    apply_limit(d, options.limit, options.limit_seed);
    return d;
  }
  if (!fs::exists(spec)) throw Error(spec + ": no such file or folder");
  if (ends(".csv") || ends(".tsv") || ends(".txt")) return open_csv(spec, options);
  if (l.find("idx3") != std::string::npos) return open_idx(spec, options);
  throw Error(spec + ": unknown dataset kind (expected a folder of class folders, a .csv, an IDX images file or .tar shards)");
}

}  // namespace clip::data
