#pragma once
// Helpers shared by the model-using subcommands (embed, zeroshot, similarity).
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "clip/clip.h"

namespace clip::app {

// Expands files and directories (recursively, sorted, image extensions only) into image paths.
std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs);
// One text per line (UTF-8; a trailing '\r' is dropped; empty lines are kept as empty texts
// only if `keep_empty`).
std::vector<std::string> read_text_lines(const std::string& path, bool keep_empty = false);
// Splits "dog,cat , bird" into trimmed labels.
std::vector<std::string> split_labels(const std::string& s);
// Options every model-using command shares (--model, --vocab, --threads, decoding flags).
struct ModelFlags {
  std::string model, vocab, config;
  int threads = 0;
  bool fast_jpeg = false, exif_orient = false;
  int64_t max_pixels = 89478485;
  void add_to(CLI::App* cmd);
};
clip::Model load_model(const ModelFlags& flags);

}  // namespace clip::app
