#pragma once
// Helpers shared by the model-using subcommands (embed, zeroshot, similarity).
#include <string>
#include <vector>

#include "clip/clip.h"

namespace clip::app {

// Expands files and directories (recursively, sorted, image extensions only) into image paths.
std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs);
// One text per line (UTF-8; a trailing '\r' is dropped; empty lines are kept as empty texts
// only if `keep_empty`).
std::vector<std::string> read_text_lines(const std::string& path, bool keep_empty = false);
// Splits "dog,cat , bird" into trimmed labels.
std::vector<std::string> split_labels(const std::string& s);
clip::Model load_model(const std::string& path, const std::string& vocab, int threads);

}  // namespace clip::app
