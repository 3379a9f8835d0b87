#pragma once
// The one grammar of the model-using commands (embed, zeroshot, similarity), in one place:
//   clip COMMAND -m MODEL [IMAGES...] [--images ...] [--text T]... [--texts-file F]...
//        [--threads N] [-b N] [--truncate] [--strict] [--json]
// Images are positional (files and folders; `--images` says the same); a literal text is
// `--text` (repeatable), a file of texts one per line is `--texts-file` (`--texts` is the same
// flag); templates and labels follow the same pattern (`--template` / `--templates-file`).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clip/clip.h"
#include "core/embeddings_file.h"  // tsv_escape
#include "search/index_db.h"

namespace clip::app {

// Files and folders -> image paths. Folders are searched recursively (sorted; hidden entries
// skipped) for the extensions we decode; a named file is taken as it is (a bad one is skipped
// or fatal when encoded). A path that does not exist is an error.
std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs);
// One text per line (UTF-8; a trailing '\r' is dropped; empty lines are kept as empty texts
// only if `keep_empty`).
std::vector<std::string> read_text_lines(const std::string& path, bool keep_empty = false);
// Splits "dog,cat , bird" into trimmed labels.
std::vector<std::string> split_labels(const std::string& s);

// Threads: 0 (all cores) up to this machine's logical CPUs.
CLI::Validator threads_range();
// --precision fp32|bf16 (ModelFlags has it; clip eval, with its own options, too).
void add_precision_option(CLI::App* cmd, std::string& precision);
int logical_cpus();

// Checks, before any work, that `path` can be written: not a folder, its folder exists and is
// writable. Errors name the flag and the path.
void check_output_file(const std::string& path, const std::string& flag);

// Options every model-using command shares.
struct ModelFlags {
  std::string model, vocab, config;
  int threads = 0;
  int batch_size = 32;
  bool fast_jpeg = false, exif_orient = false;
  int64_t max_pixels = 89478485;
  std::string precision = "fp32";
  void add_to(CLI::App* cmd, bool model_required = true);
};
clip::Model load_model(const ModelFlags& flags);
// The model of an index database (clip search, clip serve): --model when given, which must be
// the one the index was built with; else the path the database recorded. `flags.model` is set to
// the path used.
clip::Model load_index_model(const search::IndexDb& db, ModelFlags& flags);

// Image inputs: positional and --images, plus --strict.
struct ImageFlags {
  std::vector<std::string> positional, named;
  bool strict = false;
  void add_to(CLI::App* cmd, const std::string& what);
  std::vector<std::string> paths() const;  // expanded, in order
};

// Literal texts (--text) and files of texts (--texts-file / --texts), plus --truncate.
struct TextFlags {
  std::vector<std::string> literal, files;
  bool truncate = false;
  void add_to(CLI::App* cmd);
  // The files' lines (in order), then each --text.
  std::vector<std::string> texts(bool keep_empty_lines) const;
};

// Images encoded in batches with a progress line; unreadable files skipped with one warning
// each and a summary (or fatal with --strict). `kept` holds the indices (into `paths`) of the
// rows returned. Every file failing is an error.
clip::Embeddings encode_images(const char* command, const clip::Model& model, const std::vector<std::string>& paths,
                               int batch_size, bool strict, std::vector<size_t>& kept);
// Texts encoded; over-long ones are an error naming the text and --truncate, or with
// --truncate cut and counted in a note.
clip::Embeddings encode_texts(const char* command, const clip::Model& model, const std::vector<std::string>& texts,
                              int batch_size, bool truncate);

// Rows saved by `clip embed` (.npy + the .tsv beside it), split by kind.
struct SavedEmbeddings {
  clip::Embeddings images, texts;
  std::vector<std::string> image_sources, text_sources;
};
SavedEmbeddings read_saved_embeddings(const std::string& npy_path);

// One JSON object per line on stdout.
void print_json_line(const nlohmann::json& j);

}  // namespace clip::app
