#pragma once
// The rows `clip embed` writes and `clip zeroshot/similarity --embeddings` read back: a float32
// .npy [rows, dim] and, beside it, a .tsv naming each row ("row<TAB>kind<TAB>source" header,
// then one line per row, in order; kind is "image" or "text"; tab, newline, carriage return and
// backslash in a source escaped as \t \n \r \\). One definition of the format, both ways.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace clip {

struct EmbeddingRows {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;                  // [rows, cols]
  std::vector<std::string> kinds, sources;  // one each per row
};

// The .tsv beside an .npy path.
std::string embedding_sidecar_path(const std::string& npy_path);
// Writes the .npy and then the .tsv, each atomically.
void write_embedding_rows(const std::string& npy_path, const EmbeddingRows& rows);
// Reads both; errors name the file and the problem (missing sidecar, row count, bad line).
EmbeddingRows read_embedding_rows(const std::string& npy_path);
// The .tsv text alone (`name` for messages); throws clip::Error on anything malformed.
void parse_embedding_sidecar(std::string_view text, const std::string& name, int64_t expected_rows,
                             std::vector<std::string>& kinds, std::vector<std::string>& sources);

std::string tsv_escape(std::string_view s);
std::string tsv_unescape(std::string_view s);

}  // namespace clip
