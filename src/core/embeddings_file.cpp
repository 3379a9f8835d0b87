#include "core/embeddings_file.h"

#include <filesystem>

#include "core/error.h"
#include "core/io.h"

namespace clip {
namespace fs = std::filesystem;

namespace {
constexpr std::string_view kHeader = "row\tkind\tsource";
}

std::string tsv_escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '\t') o += "\\t";
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\\') o += "\\\\";
    else o += c;
  }
  return o;
}

std::string tsv_unescape(std::string_view s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      o += s[i];
      continue;
    }
    const char n = s[++i];
    o += n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n;
  }
  return o;
}

std::string embedding_sidecar_path(const std::string& npy_path) {
  fs::path side(npy_path);
  side.replace_extension(".tsv");
  return side.string();
}

void write_embedding_rows(const std::string& npy_path, const EmbeddingRows& r) {
  if (r.data.size() != size_t(r.rows) * size_t(r.cols) || r.kinds.size() != size_t(r.rows) ||
      r.sources.size() != size_t(r.rows))
    throw Error(npy_path + ": embedding rows, kinds and sources differ in count");
  std::string tsv = std::string(kHeader) + "\n";
  for (int64_t i = 0; i < r.rows; ++i) {
    const std::string& k = r.kinds[size_t(i)];
    if (k != "image" && k != "text") throw Error(npy_path + ": row kind \"" + k + "\" is neither image nor text");
    tsv += std::to_string(i) + "\t" + k + "\t" + tsv_escape(r.sources[size_t(i)]) + "\n";
  }
  write_npy_f32(npy_path, r.data.data(), {r.rows, r.cols});
  write_file_atomic(embedding_sidecar_path(npy_path), tsv);
}

void parse_embedding_sidecar(std::string_view text, const std::string& name, int64_t expected_rows,
                             std::vector<std::string>& kinds, std::vector<std::string>& sources) {
  kinds.clear();
  sources.clear();
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++line_no;
    const std::string where = name + ":" + std::to_string(line_no);
    if (line_no == 1) {
      if (line != kHeader) throw Error(where + ": expected the header \"row<TAB>kind<TAB>source\" written by clip embed");
      continue;
    }
    if (line.empty()) continue;
    const size_t t1 = line.find('\t');
    const size_t t2 = t1 == std::string_view::npos ? t1 : line.find('\t', t1 + 1);
    if (t2 == std::string_view::npos) throw Error(where + ": expected row, kind and source separated by tabs");
    const std::string_view row = line.substr(0, t1), kind = line.substr(t1 + 1, t2 - t1 - 1);
    if (row != std::to_string(kinds.size()))
      throw Error(where + ": row number \"" + std::string(row.substr(0, 20)) + "\", expected " +
                  std::to_string(kinds.size()));
    if (kind != "image" && kind != "text")
      throw Error(where + ": kind \"" + std::string(kind.substr(0, 20)) + "\" is neither image nor text");
    if (int64_t(kinds.size()) >= expected_rows)
      throw Error(name + ": names more rows than the " + std::to_string(expected_rows) + " of its .npy");
    kinds.emplace_back(kind);
    sources.push_back(tsv_unescape(line.substr(t2 + 1)));
  }
  if (line_no == 0) throw Error(name + ": empty (expected the header written by clip embed)");
  if (int64_t(kinds.size()) != expected_rows)
    throw Error(name + ": names " + std::to_string(kinds.size()) + " rows but its .npy holds " +
                std::to_string(expected_rows));
}

EmbeddingRows read_embedding_rows(const std::string& npy_path) {
  EmbeddingRows r;
  std::vector<int64_t> shape;
  r.data = read_npy_f32(npy_path, shape);
  if (shape.size() != 2) throw Error(npy_path + ": expected a 2-D float32 array [rows, dim] written by clip embed");
  r.rows = shape[0];
  r.cols = shape[1];
  const std::string tsv = embedding_sidecar_path(npy_path);
  std::error_code ec;
  if (!fs::exists(tsv, ec)) throw Error(npy_path + ": no " + tsv + " beside it naming the rows (clip embed writes both)");
  parse_embedding_sidecar(read_text_file(tsv), tsv, r.rows, r.kinds, r.sources);
  return r;
}

}  // namespace clip
