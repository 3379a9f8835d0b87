#pragma once
// Shared by tests/test_eval_*.cpp: runs tools/eval_reference.py (numpy / scikit-learn, an
// implementation independent of ours) into the build folder and reads what it wrote.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io.h"

namespace clip::eval::testing {

// Runs `eval_reference.py <mode> --out <dir> <extra>` once per (mode, extra) and returns dir,
// or "" (and the caller skips) when the interpreter lacks numpy / scikit-learn.
inline std::string reference(const std::string& mode, const std::string& tag, const std::string& extra = "") {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/eval_reference/" + tag;
  if (std::filesystem::exists(dir + "/expected.json")) return dir;
  if (std::system((std::string(CLIP_PYTHON) + " -c 'import numpy, sklearn' 2>/dev/null").c_str()) != 0) return "";
  const std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/eval_reference.py " + mode +
                          " --out " + dir + " " + extra + " > /dev/null";
  if (std::system(cmd.c_str()) != 0) return "";
  return dir;
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(clip::read_text_file(path)); }

inline std::vector<float> npy(const std::string& path, std::vector<int64_t>* shape_out = nullptr) {
  std::vector<int64_t> shape;
  auto v = clip::read_npy_f32(path, shape);
  if (shape_out) *shape_out = shape;
  return v;
}

inline std::vector<int> npy_labels(const std::string& path) {
  auto v = npy(path);
  return std::vector<int>(v.begin(), v.end());
}

}  // namespace clip::eval::testing
