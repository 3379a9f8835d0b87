// `clip info`: the built binary describes a model, and refuses a hostile file with a non-zero
// exit and one "clip: error: <file>: <problem>" line. Skipped when the binary is not built.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/io.h"
#include "model/checkpoint_writer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace clip;

namespace {

using clip::test::CliRun;

CliRun run_clip(const std::string& args) {
  return clip::test::run_clip(args, std::string(CLIP_BINARY_DIR) + "/test_tmp/app_info");
}

bool have_binary() { return fs::exists(std::string(CLIP_BINARY_DIR) + "/clip"); }

std::string tmp(const std::string& name) {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_info";
  fs::create_directories(dir);
  return dir + "/" + name;
}

ModelConfig tiny() {
  ModelConfig c;
  c.embed_dim = 32;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 64;
  c.vision.layers = 1;
  c.vision.heads = 1;
  c.vision.mlp_dim = 256;
  c.text.context_length = 7;
  c.text.vocab_size = 50;
  c.text.width = 64;
  c.text.heads = 1;
  c.text.layers = 1;
  c.text.mlp_dim = 256;
  return c;
}

}  // namespace

TEST(AppInfo, DescribesAModelDirectory) {
  if (!have_binary()) GTEST_SKIP() << "clip binary not built";
  const ModelConfig c = tiny();
  const std::string dir = tmp("hf_model");
  write_model_directory(dir, random_canonical_tensors(c, 1), c, NamingScheme::HuggingFace, DType::F16);
  CliRun r = run_clip("info --model " + dir + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["naming_scheme"], "huggingface");
  EXPECT_EQ(j["vision"]["type"], "vit");
  EXPECT_EQ(j["vision"]["patch_size"], 8);
  EXPECT_EQ(j["text"]["layers"], 1);
  EXPECT_EQ(j["embed_dim"], 32);
  EXPECT_EQ(j["stored_dtype"], "F16");
  EXPECT_EQ(j["parameters"], parameter_count(c));
  EXPECT_EQ(j["file_size"], fs::file_size(dir + "/model.safetensors"));
  CliRun text = run_clip("info -m " + dir);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("naming scheme: huggingface"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("patch 8, width 64, layers 1, heads 1, mlp 256"), std::string::npos) << text.out;
}

TEST(AppInfo, HostileFileFailsWithOneLine) {
  if (!have_binary()) GTEST_SKIP() << "clip binary not built";
  const std::string path = tmp("hostile.safetensors");
  // Header length 8, header {"a":1} padded: the entry is not an object.
  write_file_atomic(path, std::string("\x08\0\0\0\0\0\0\0{\"a\":1} ", 16));
  CliRun r = run_clip("info --model " + path);
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(r.err, "clip: error: " + path + ": tensor 'a': header entry is not a JSON object\n");
  const std::string empty = tmp("empty.safetensors");
  write_file_atomic(empty, "");
  r = run_clip("info --model " + empty);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("clip: error: " + empty + ": file is empty", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}
