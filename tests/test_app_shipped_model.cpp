// The models that ship in models/ (trained by recipes/cifar10/train.sh): each is a complete
// model directory (weights, config, its own vocabulary, preprocessing), and its zero-shot
// accuracy on the CIFAR-10 test set with CLIP's 18 templates stays at the level docs/RESULTS.md
// reports: the default cifar10-rn-small at issue 20's floor of 80 % and at least 60 % mean
// accuracy under the corruption suite at severity 3; the first model, cifar10-vit-tiny (kept
// as the ViT example), at issue 5's 60 %.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace fs = std::filesystem;
using clip::test::run_clip;

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-rn-small";
const std::string kVitModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kShared = CLIP_SHARED_DATA;

std::string scratch(const std::string& name) {
  const std::string d = std::string(CLIP_BINARY_DIR) + "/test_tmp/shipped_" + name + "_" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

double zero_shot_cifar10(const std::string& model, const std::string& dataset, const std::string& name) {
  const std::string dir = scratch(name);
  const auto r = run_clip("eval zeroshot --model " + model + " --dataset " + dataset + " --dataset-name cifar10 --templates " +
                              CLIP_SOURCE_DIR + "/recipes/cifar10/cifar10_eval_templates.txt --no-cache -o " + dir + "/r.json",
                          dir);
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return 0;
  std::ifstream in(dir + "/r.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["details"]["templates"].get<int>(), 18);
  return j["metrics"]["acc1"].get<double>();
}

TEST(ShippedModel, IsACompleteModelDirectory) {
  for (const std::string& kModel : {kModel, kVitModel}) {
  SCOPED_TRACE(kModel);
  ASSERT_TRUE(fs::exists(kModel + "/open_clip_model.safetensors"));
  ASSERT_TRUE(fs::exists(kModel + "/open_clip_config.json"));
  ASSERT_TRUE(fs::exists(kModel + "/bpe_vocab.txt.gz"));
  uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(kModel))
    if (e.is_regular_file()) bytes += e.file_size();
  EXPECT_LE(bytes, 30u * 1000 * 1000) << "the shipped model directory must stay within 30 MB";
  // Nothing but the directory: no --vocab, and no fallback vocabulary to find.
  const std::string dir = scratch("embed");
  setenv("CLIP_VOCAB", "/nonexistent", 1);
  const auto r = run_clip("embed --model " + kModel + " --text 'a photo of a cat' --text 'a ship' -o " + dir + "/e.npy", dir);
  unsetenv("CLIP_VOCAB");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir + "/e.npy"));
  }
}

// The whole CIFAR-10 test set (10,000 images): a few seconds in Release, so not under ASan.
TEST(ShippedModel, ZeroShotCifar10Slow) {
  const std::string test = kShared + "/cifar10_jpeg/test";
  if (!fs::exists(test)) GTEST_FAIL() << "no shared data";
  const double acc = zero_shot_cifar10(kModel, test, "cifar");
  EXPECT_GE(acc, 0.80);
  const double vit = zero_shot_cifar10(kVitModel, test, "cifar_vit");
  EXPECT_GE(vit, 0.60);
  std::printf("shipped models: zero-shot CIFAR-10 top-1 %.4f (cifar10-rn-small), %.4f (cifar10-vit-tiny)\n", acc, vit);
}

// Issue 20's robustness floor on a class-stratified 2,000-image subset of the test set, each
// corruption at severity 3 made by `clip data corrupt` (the full table, all 10,000 images at
// severities 1/3/5, is in docs/RESULTS.md): the mean of the six accuracies at least 60 %.
TEST(ShippedModel, CorruptionSuiteSeverity3Slow) {
  const std::string test = kShared + "/cifar10_jpeg/test";
  if (!fs::exists(test)) GTEST_FAIL() << "no shared data";
  const std::string dir = scratch("corrupt");
  const auto r = run_clip("data corrupt --input " + test + " --output " + dir + "/c --corruption all --severity 3 --limit 2000 --seed 0",
                          dir);
  ASSERT_EQ(r.status, 0) << r.err;
  double sum = 0;
  int n = 0;
  for (const char* c : {"gaussian_noise", "gaussian_blur", "jpeg", "contrast", "grayscale", "pixelate"}) {
    const double acc = zero_shot_cifar10(kModel, dir + "/c/" + c + "/3", std::string("c_") + c);
    std::printf("%s/3: %.4f\n", c, acc);
    sum += acc;
    ++n;
  }
  EXPECT_GE(sum / n, 0.60);
}
