#pragma once
// Dataset readers shared by evaluation (and usable by training): each yields samples of
// (an image, a class label and/or captions). Images stay encoded (a path on disk, or the
// bytes of a tar member) until a worker decodes them through the vision module, except IDX
// sets, whose pixels are held decoded.
//
//   * a folder of class folders:   root/<class>/<image>  (classes sorted by name, as
//     torchvision's ImageFolder; images sorted by path);
//   * CSV (RFC 4180: quoted fields, "" escapes, CRLF, newlines inside quotes): a header with an
//     image column (path / image / filepath / filename / file / image_path), optionally label,
//     class (class name) and caption / text / title columns; relative paths resolve against
//     `root` (default: the CSV's folder). Rows with a caption are grouped by image, in first-
//     appearance order, so a retrieval set has one sample per image with all its captions;
//   * IDX (MNIST, Fashion-MNIST; gzip or not): "<x>-images-idx3-ubyte[.gz]" with its
//     "<x>-labels-idx1-ubyte[.gz]" found beside it (or given);
//   * WebDataset shards: one or more .tar files (comma-separated, and "{000..009}" brace
//     ranges); members are grouped by key (the name up to the first '.' of its last path
//     component); image extensions jpg/jpeg/png/webp/bmp/gif, ".cls" (an integer label) and
//     ".txt" (a caption). Tar members are read into memory once.
#include <cstdint>
#include <string>
#include <vector>

#include "vision/image.h"

namespace clip::data {

struct Sample {
  std::string id;                // file path, CSV path, "<shard>:<key>" or "<idx file>#<n>"
  std::string path;              // image file on disk ("" for tar / IDX samples)
  std::vector<uint8_t> encoded;  // tar member bytes
  int64_t array_index = -1;      // index into Dataset::arrays (IDX)
  int label = -1;                // -1: unlabeled
  std::vector<std::string> captions;
};

struct Dataset {
  std::string name;                     // a short name (folder or file stem) for results
  std::string source;                   // what was opened
  std::vector<std::string> classnames;  // index = label; may be empty (CSV without class names)
  std::vector<Sample> samples;
  std::vector<clip::Image> arrays;      // decoded images of array formats (IDX)
  std::string subset_note;              // set when DatasetOptions::limit took a subset: what and how

  size_t size() const { return samples.size(); }
  int num_classes() const;              // classnames.size(), or max label + 1
  bool has_labels() const;              // every sample labeled
  bool has_captions() const;            // every sample has >= 1 caption
  // Decodes sample i through the vision module (clip::decode_image_file / _memory).
  clip::Image load_image(size_t i) const;
  // A 64-bit hash of the sample list (ids, labels, captions, file sizes and mtimes), for
  // feature caches: it changes when the set changes.
  uint64_t fingerprint() const;
};

struct DatasetOptions {
  std::string root;         // CSV: folder that relative image paths resolve against
  std::string labels_path;  // IDX: labels file (default: found beside the images)
  // > 0: keep a seeded subset of `limit` samples, in their original order: stratified by class
  // (each class in proportion to its size) when every sample has a label, else uniform. Never
  // "the first N" (a class-sorted folder would give one class).
  int64_t limit = 0;
  uint64_t limit_seed = 0;
};

// Opens `spec` by its kind (folder, .csv, IDX, .tar shards). Throws clip::Error naming the
// file and the problem for missing files, bad CSV, unknown columns, bad labels, empty sets.
Dataset open_dataset(const std::string& spec, const DatasetOptions& options = {});

Dataset open_class_folders(const std::string& root);
Dataset open_csv(const std::string& path, const DatasetOptions& options = {});
Dataset open_idx(const std::string& images_path, const DatasetOptions& options = {});
Dataset open_webdataset(const std::vector<std::string>& shards);

// RFC 4180 parsing of a whole CSV text into rows of fields (`separator`: ',' or '\t' for TSV,
// quoted the same way, as pandas reads both). Throws clip::Error (with `name` and the line) on
// an unterminated quote or text after a closing quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& name,
                                                char separator = ',');

// Field `column` of row `r` of parse_csv's `rows` (row 0: the header) read from `path`; a row
// with fewer fields than that is a clip::Error naming the file, the row and the header's width.
const std::string& csv_field(const std::vector<std::vector<std::string>>& rows, size_t r,
                             int column, const std::string& path);

// "a-{00..02}.tar,b.tar" -> a-00.tar a-01.tar a-02.tar b.tar (zero padding kept).
std::vector<std::string> expand_shards(const std::string& spec);

// True for names ending in an image extension we decode.
bool is_image_file_name(const std::string& name);

// FNV-1a 64-bit.
uint64_t fnv1a64(const void* data, size_t size, uint64_t h = 0xcbf29ce484222325ull);
inline uint64_t fnv1a64(const std::string& s, uint64_t h = 0xcbf29ce484222325ull) {
  return fnv1a64(s.data(), s.size(), h);
}

}  // namespace clip::data
