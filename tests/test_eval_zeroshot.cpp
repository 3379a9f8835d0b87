// Zero-shot class embeddings and logits against numpy (tools/eval_reference.py zeroshot), the
// prompt loaders on the shared CLIP prompt files, and the encoder callback's batching.
#include <cmath>
#include <filesystem>

#include "data/datasets.h"
#include "core/error.h"
#include "eval/zeroshot.h"
#include "test_eval_util.h"

using namespace clip::eval;
using namespace clip::data;
using namespace clip::eval::testing;

TEST(EvalZeroShot, MatchesNumpy) {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/eval_reference/zeroshot";
  if (!std::filesystem::exists(dir + "/logits.npy")) {
    if (std::system((std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR + "/tools/eval_reference.py zeroshot --out " + dir +
                     " > /dev/null 2>&1").c_str()) != 0)
      GTEST_FAIL() << "numpy not available to " CLIP_PYTHON;
  }
  std::vector<int64_t> ts, is;
  auto t = npy(dir + "/template_embeddings.npy", &ts);
  auto img = npy(dir + "/images.npy", &is);
  auto ref_c = npy(dir + "/class_embeddings.npy");
  auto ref_l = npy(dir + "/logits.npy");
  const int classes = 7, templates = 5, dim = int(ts[1]);
  auto ce = class_embeddings_from_templates(t.data(), classes, templates, dim);
  ASSERT_EQ(ce.weights.size(), ref_c.size());
  // float32 result of a double computation on both sides: equal to float rounding.
  for (size_t i = 0; i < ref_c.size(); ++i) EXPECT_NEAR(ce.weights[i], ref_c[i], 2e-7f) << i;
  auto logits = zeroshot_logits(img.data(), is[0], dim, ce);
  for (size_t i = 0; i < ref_l.size(); ++i) EXPECT_NEAR(logits[i], ref_l[i], 2e-4f) << i;  // 100 * cosine

  // The same through the encoder callback, in batches of 3 prompts (not a divisor of 35).
  std::vector<std::string> names, tmpls;
  for (int c = 0; c < classes; ++c) names.push_back("class" + std::to_string(c));
  for (int k = 0; k < templates; ++k) tmpls.push_back("t" + std::to_string(k) + " {}");
  int calls = 0;
  TextEncoder enc = [&](const std::vector<std::string>& texts, std::vector<float>& out) {
    ++calls;
    out.clear();
    for (auto& s : texts) {  // "t<k> class<c>" -> row c*templates+k of the reference input
      const int k = s[1] - '0', c = s.back() - '0';
      const float* row = t.data() + (size_t(c) * templates + k) * dim;
      out.insert(out.end(), row, row + dim);
    }
    return dim;
  };
  auto ce2 = build_class_embeddings(names, tmpls, enc, 3);
  EXPECT_EQ(calls, 12);
  EXPECT_EQ(ce2.weights, ce.weights);
}

TEST(EvalZeroShot, TemplatesAndPromptFiles) {
  EXPECT_EQ(format_template("a photo of a {}.", "dog"), "a photo of a dog.");
  EXPECT_EQ(format_template("a {c} and a {c}", "cat"), "a cat and a cat");
  EXPECT_THROW(format_template("no placeholder", "cat"), clip::Error);
  const std::string data = std::string(CLIP_SOURCE_DIR) + "/tests/data/eval/";
  auto p = load_prompts(data + "classnames.txt", data + "templates.txt", "");
  EXPECT_EQ(p.classnames, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(p.templates, (std::vector<std::string>{"a photo of a {}.", "itap of a {c}."}));
  const std::string shared = std::string(CLIP_SHARED_DATA) + "/clip_prompts/";
  if (!std::filesystem::exists(shared)) GTEST_FAIL() << "shared data not present";
  auto cb = load_prompts(shared + "clip_benchmark_en_classnames.json", shared + "clip_benchmark_en_zeroshot_templates.json",
                         "imagenet1k");
  EXPECT_EQ(cb.classnames.size(), 1000u);
  EXPECT_EQ(cb.templates.size(), 80u);
  auto all = load_prompts(shared + "clip_prompts_all.json", "", "CIFAR-100");
  EXPECT_EQ(all.classnames.size(), 100u);
  EXPECT_EQ(all.templates.size(), 18u);
  auto in = load_prompts(shared + "imagenet_classes_templates.json", "", "");
  EXPECT_EQ(in.classnames.size(), 1000u);
  EXPECT_EQ(in.templates.size(), 80u);
  auto txt = load_prompts(shared + "imagenet_classes.txt", shared + "imagenet_templates.txt", "");
  EXPECT_EQ(txt.classnames.size(), 1000u);
  EXPECT_EQ(txt.templates.size(), 80u);
  try {
    load_prompts(shared + "clip_benchmark_en_classnames.json", "", "no-such-set");
    FAIL();
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("clip_benchmark_en_classnames.json"), std::string::npos);
  }
}
