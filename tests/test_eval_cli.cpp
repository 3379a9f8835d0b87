// End-to-end runs of `clip eval ...` and `clip data corrupt` (the built `clip` program; skipped
// when it has not been built): the linear probe on fixed features against scikit-learn
// (accuracy within 0.5 points at the same C; the searched C is reported), retrieval on fixed
// embeddings against numpy, and the model-based commands on a tiny seeded CLIP with the real
// tokenizer (zeroshot, robustness, linear-probe, retrieval, corrupt, report) for consistency.
#include <filesystem>

#include "data/datasets.h"
#include "eval/results.h"
#include "test_eval_util.h"

using namespace clip::eval;
using namespace clip::data;
using namespace clip::eval::testing;
namespace fs = std::filesystem;

namespace {

const std::string kClip = std::string(CLIP_BINARY_DIR) + "/clip";
const std::string kShared = CLIP_SHARED_DATA;

int run(const std::string& args) {
  const std::string cmd = kClip + " " + args + " > " + CLIP_BINARY_DIR + "/eval_tmp/cli_last.log 2>&1";
  return std::system(cmd.c_str());
}

std::string out_dir(const std::string& name) {
  const std::string d = std::string(CLIP_BINARY_DIR) + "/eval_tmp/cli_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

#define REQUIRE_CLIP() \
  if (!fs::exists(kClip)) GTEST_FAIL() << "build the clip target first (" << kClip << ")"

}  // namespace

TEST(EvalCli, LinearProbeOnFeaturesMatchesSklearn) {
  REQUIRE_CLIP();
  const std::string ref = reference("logreg", "logreg10", "--classes 10 --C 0.316");
  if (ref.empty()) GTEST_FAIL() << "numpy/scikit-learn not available";
  const std::string out = out_dir("probe");
  const std::string feats = " --train-features " + ref + "/train_x.npy --train-labels " + ref + "/train_y.npy" +
                            " --test-features " + ref + "/test_x.npy --test-labels " + ref + "/test_y.npy";
  ASSERT_EQ(run("eval linear-probe" + feats + " --C 0.316 -o " + out + "/fixed.json"), 0);
  auto r = read_result(out + "/fixed.json");
  EXPECT_EQ(r.task, "linear_probe");
  EXPECT_NEAR(r.metrics["acc1"].get<double>(), read_json(ref + "/expected.json")["test_accuracy"].get<double>(), 0.005);
  EXPECT_DOUBLE_EQ(r.metrics["C"].get<double>(), 0.316);
  // Without --C the penalty is searched and reported.
  ASSERT_EQ(run("eval linear-probe" + feats + " -o " + out + "/searched.json"), 0);
  auto s = read_result(out + "/searched.json");
  EXPECT_GT(s.metrics["C"].get<double>(), 0.0);
  EXPECT_TRUE(s.details.contains("penalty_search"));
  EXPECT_GT(s.metrics["acc1"].get<double>(), 0.6);
  // ... and at the chosen C scikit-learn agrees too (same seed: the same features).
  char cbuf[64];
  std::snprintf(cbuf, sizeof cbuf, "%.17g", s.metrics["C"].get<double>());
  const std::string chosen = reference("logreg", std::string("logreg10_C") + cbuf, std::string("--classes 10 --C ") + cbuf);
  ASSERT_FALSE(chosen.empty());
  EXPECT_NEAR(s.metrics["acc1"].get<double>(), read_json(chosen + "/expected.json")["test_accuracy"].get<double>(), 0.005)
      << "C = " << cbuf;
  // Bad input: labels and features disagree in length.
  EXPECT_NE(run("eval linear-probe --train-features " + ref + "/train_x.npy --train-labels " + ref +
                "/test_y.npy --test-features " + ref + "/test_x.npy --test-labels " + ref + "/test_y.npy"),
            0);
}

TEST(EvalCli, RetrievalOnFeaturesMatchesNumpy) {
  REQUIRE_CLIP();
  const std::string ref = reference("metrics", "metrics");
  if (ref.empty()) GTEST_FAIL() << "numpy/scikit-learn not available";
  const std::string out = out_dir("retrieval");
  ASSERT_EQ(run("eval retrieval --image-features " + ref + "/images.npy --text-features " + ref +
                "/texts.npy --text-image " + ref + "/text_image.npy -o " + out + "/r.json"),
            0);
  auto r = read_result(out + "/r.json");
  auto exp = read_json(ref + "/expected.json");
  for (int k : {1, 5, 10}) {
    EXPECT_NEAR(r.metrics["text_retrieval_recall@" + std::to_string(k)].get<double>(),
                exp["image_to_text"]["recall@" + std::to_string(k)].get<double>(), 1e-12);
    EXPECT_NEAR(r.metrics["image_retrieval_recall@" + std::to_string(k)].get<double>(),
                exp["text_to_image"]["recall@" + std::to_string(k)].get<double>(), 1e-12);
  }
  EXPECT_NEAR(r.metrics["image_retrieval_median_rank"].get<double>(), exp["text_to_image"]["median_rank"].get<double>(), 1e-12);
}

TEST(EvalCli, ModelCommandsEndToEnd) {
  REQUIRE_CLIP();
  if (!fs::exists(kShared + "/cifar10_jpeg/test") || !fs::exists(kShared + "/clip_vocab")) GTEST_FAIL() << "no shared data";
  const std::string mdir = std::string(CLIP_BINARY_DIR) + "/eval_reference/tinymodel";
  if (!fs::exists(mdir + "/model.safetensors") &&
      std::system((std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/eval_reference.py model --out " + mdir +
                   " > /dev/null 2>&1").c_str()) != 0)
    GTEST_FAIL() << "torch not available to build the tiny model";
  const std::string out = out_dir("model");
  const std::string common = " -m " + mdir + "/model.safetensors --vocab " + kShared + "/clip_vocab --cache " + out +
                             "/cache -o " + out + "/results --limit 30 --dataset-name cifar10";
  const std::string templates = " --templates " + kShared + "/clip_prompts/clip_benchmark_en_zeroshot_templates.json";
  const std::string base = kShared + "/cifar10_jpeg/test_labels.csv";
  ASSERT_EQ(run("eval zeroshot -d " + base + templates + common + " --confusion"), 0);
  auto z = read_result(out + "/results/tinymodel_cifar10_zeroshot_classification.json");
  EXPECT_EQ(z.details["confusion_matrix"].size(), 10u);
  EXPECT_EQ(z.details["templates"].get<int>(), 18);
  // Corrupted copies, twice with the same seed: identical bytes.
  ASSERT_EQ(run("data corrupt -i " + base + " --limit 30 -o " + out + "/c1 -c gaussian_noise,jpeg -s 2 --seed 5"), 0);
  ASSERT_EQ(run("data corrupt -i " + base + " --limit 30 -o " + out + "/c2 -c gaussian_noise -s 2 --seed 5"), 0);
  // --limit 30 of the 10 classes: a stratified subset, 3 per class.
  for (const auto& cls : fs::directory_iterator(out + "/c1/gaussian_noise/2"))
    EXPECT_EQ(std::distance(fs::directory_iterator(cls.path()), fs::directory_iterator{}), 3) << cls.path();
  int compared = 0;
  for (const auto& f : fs::recursive_directory_iterator(out + "/c2/gaussian_noise/2")) {
    if (!f.is_regular_file()) continue;
    const fs::path rel = fs::relative(f.path(), out + "/c2");
    EXPECT_EQ(clip::read_file(f.path().string()), clip::read_file((fs::path(out + "/c1") / rel).string())) << rel;
    fs::path jpg = fs::path(out + "/c1/jpeg/2") / fs::relative(f.path(), out + "/c2/gaussian_noise/2");
    EXPECT_TRUE(fs::exists(jpg.replace_extension(".jpg"))) << jpg;
    ++compared;
  }
  EXPECT_EQ(compared, 30);
  // Robustness: the base accuracy is the zero-shot accuracy of the same set (cached features).
  ASSERT_EQ(run("eval robustness -d " + base + templates + common + " --variant " + out + "/c1/gaussian_noise/2" +
                " --variant q=" + out + "/c1/jpeg/2"),
            0);
  auto rb = read_result(out + "/results/tinymodel_cifar10_robustness.json");
  EXPECT_DOUBLE_EQ(rb.metrics["base_acc1"].get<double>(), z.metrics["acc1"].get<double>());
  ASSERT_EQ(rb.details["variants"].size(), 2u);
  EXPECT_EQ(rb.details["variants"][0]["name"], "gaussian_noise/2");
  EXPECT_EQ(rb.details["variants"][1]["name"], "q");
  // Linear probe on MNIST features from the model, few-shot at a fixed C.
  const std::string mnist = kShared + "/mnist/";
  ASSERT_EQ(run("eval linear-probe --train " + mnist + "train10k-images-idx3-ubyte.gz --test " + mnist +
                "t10k-images-idx3-ubyte.gz -m " + mdir + "/model.safetensors --cache " + out + "/cache -o " + out +
                "/results --dataset-name mnist --limit 200 --C 1 --shots 1,2 --seeds 2"),
            0);
  auto k2 = read_result(out + "/results/tinymodel_mnist_linear_probe_2shot.json");
  EXPECT_EQ(k2.metrics["fewshot_k"].get<int>(), 2);
  EXPECT_EQ(k2.details["acc1_per_seed"].size(), 2u);
  // Retrieval on Flickr captions.
  ASSERT_EQ(run("eval retrieval -d " + kShared + "/flickr8k_subset1000/captions.txt --root " + kShared +
                "/flickr8k_subset1000/images -m " + mdir + "/model.safetensors --vocab " + kShared + "/clip_vocab --cache " +
                out + "/cache -o " + out + "/results --limit 20"),
            0);
  auto rt = read_result(out + "/results/tinymodel_captions_zeroshot_retrieval.json");
  EXPECT_EQ(rt.details["captions"].get<int>(), 100);
  // The report merges all of it.
  ASSERT_EQ(run("eval report " + out + "/results -o " + out + "/report"), 0);
  EXPECT_TRUE(fs::exists(out + "/report/report.md"));
  EXPECT_TRUE(fs::exists(out + "/report/fewshot.svg"));
  EXPECT_TRUE(fs::exists(out + "/report/robustness.svg"));
  // Errors are reported, not crashes: a missing dataset.
  EXPECT_NE(run("eval zeroshot -d /nonexistent" + common), 0);
}
