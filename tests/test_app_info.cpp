// `clip info`: the built binary describes a model, and refuses a hostile file with a non-zero
// exit and one "clip: error: <file>: <problem>" line. Skipped when the binary is not built.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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
  if (!have_binary()) GTEST_FAIL() << "clip binary not built";
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
  if (!have_binary()) GTEST_FAIL() << "clip binary not built";
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

// `clip info --system` and the CLIP_MAX_ISA cap (issue 14): the cap lowers the path our kernels
// and oneDNN take, never raises it, and a bad value is a clear error.
namespace {
// Runs `clip info --system` with CLIP_MAX_ISA set to cap (unset for ""), restoring the
// caller's value afterwards (CI runs this suite under caps too).
CliRun info_system(const std::string& cap) {
  const char* old = std::getenv("CLIP_MAX_ISA");
  const std::string saved = old ? old : "";
  if (cap.empty()) ::unsetenv("CLIP_MAX_ISA"); else ::setenv("CLIP_MAX_ISA", cap.c_str(), 1);
  CliRun r = run_clip("info --system");
  if (old) ::setenv("CLIP_MAX_ISA", saved.c_str(), 1); else ::unsetenv("CLIP_MAX_ISA");
  return r;
}
std::string field(const std::string& out, const std::string& key) {
  const size_t at = out.find(key + ":");
  if (at == std::string::npos) return "";
  const size_t b = out.find_first_not_of(' ', at + key.size() + 1), e = out.find('\n', at);
  return out.substr(b, e - b);
}
}  // namespace

TEST(AppInfo, SystemReportsTheCpuAndTheCapLowersThePaths) {
  if (!have_binary()) GTEST_FAIL() << "clip binary not built";
  const CliRun native = info_system("");
  ASSERT_EQ(native.status, 0) << native.err;
  const std::string best = field(native.out, "best isa");
  EXPECT_EQ(field(native.out, "isa in use"), best);
  EXPECT_FALSE(field(native.out, "cpu features").empty());
  const bool has_avx2 = best != "sse41";

  const CliRun base = info_system("sse41");
  ASSERT_EQ(base.status, 0) << base.err;
  EXPECT_EQ(field(base.out, "isa in use"), "sse41");
  EXPECT_EQ(field(base.out, "own kernels"), "baseline (scalar/SSE)");
  EXPECT_EQ(field(base.out, "oneDNN kernels"), "sse41");
  EXPECT_EQ(field(base.out, "best isa"), best);  // the cap does not change what the CPU has
  // The int4 / GGUF block kernel follows the cap too (portable below AVX2, avx2 below
  // AVX512-VNNI).
  EXPECT_NE(base.out.find("block kernel: portable"), std::string::npos) << base.out;
  EXPECT_NE(native.out.find("training:"), std::string::npos) << native.out;

  const CliRun avx2 = info_system("avx2");
  ASSERT_EQ(avx2.status, 0) << avx2.err;
  if (has_avx2) {
    EXPECT_EQ(field(avx2.out, "isa in use"), "avx2");
    EXPECT_EQ(field(avx2.out, "own kernels"), "avx2+fma");
    EXPECT_EQ(field(avx2.out, "oneDNN kernels"), "avx2");
    EXPECT_NE(avx2.out.find("block kernel: avx2)"), std::string::npos) << avx2.out;
  }
  // A cap above the CPU changes nothing.
  const CliRun amx = info_system("amx");
  ASSERT_EQ(amx.status, 0) << amx.err;
  EXPECT_EQ(field(amx.out, "isa in use"), best);
}

TEST(AppInfo, BadIsaCapIsAClearError) {
  if (!have_binary()) GTEST_FAIL() << "clip binary not built";
  const CliRun r = info_system("avx9000");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("CLIP_MAX_ISA=avx9000: unknown instruction set"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
}
