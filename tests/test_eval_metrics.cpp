// Metrics against an independent Python computation (tools/eval_reference.py metrics:
// numpy stable argsort, sklearn's balanced_accuracy_score and confusion_matrix), plus small
// hand-checked cases for ties, absent classes and bad input.
#include <cmath>

#include "data/datasets.h"
#include "core/error.h"
#include "eval/metrics.h"
#include "test_eval_util.h"

using namespace clip::eval;
using namespace clip::data;
using namespace clip::eval::testing;

TEST(EvalMetrics, ClassificationMatchesPython) {
  const std::string dir = reference("metrics", "metrics");
  if (dir.empty()) GTEST_FAIL() << "numpy/scikit-learn not available to " CLIP_PYTHON;
  auto exp = read_json(dir + "/expected.json");
  std::vector<int64_t> shape;
  auto scores = npy(dir + "/scores.npy", &shape);
  auto labels = npy_labels(dir + "/labels.npy");
  ASSERT_EQ(shape.size(), 2u);
  const int K = int(shape[1]);
  auto m = classification_metrics(scores.data(), shape[0], K, labels.data(), true);
  // Counts over 500 samples: exact up to double rounding of the same division.
  EXPECT_NEAR(m.top1, exp["top1"].get<double>(), 1e-12);
  EXPECT_NEAR(m.top5, exp["top5"].get<double>(), 1e-12);
  EXPECT_NEAR(m.mean_per_class_recall, exp["mean_per_class_recall"].get<double>(), 1e-12);
  auto cm = exp["confusion"];
  for (int t = 0; t < K; ++t)
    for (int p = 0; p < K; ++p) EXPECT_EQ(m.confusion[size_t(t) * K + p], cm[t][p].get<int64_t>());
  EXPECT_TRUE(std::isnan(m.per_class_recall[7]));  // the reference removes class 7
  EXPECT_EQ(m.per_class_count[7], 0);
}

TEST(EvalMetrics, RetrievalMatchesPython) {
  const std::string dir = reference("metrics", "metrics");
  if (dir.empty()) GTEST_FAIL() << "numpy/scikit-learn not available to " CLIP_PYTHON;
  auto exp = read_json(dir + "/expected.json");
  std::vector<int64_t> si, st;
  auto img = npy(dir + "/images.npy", &si);
  auto txt = npy(dir + "/texts.npy", &st);
  auto ti = npy(dir + "/text_image.npy");
  std::vector<int64_t> text_image(ti.begin(), ti.end());
  auto m = retrieval_metrics(img.data(), si[0], txt.data(), st[0], int(si[1]), text_image);
  for (auto [name, d] : {std::pair{"image_to_text", &m.image_to_text}, std::pair{"text_to_image", &m.text_to_image}}) {
    SCOPED_TRACE(name);
    for (int k : {1, 5, 10})
      EXPECT_NEAR(d->recall.at(k), exp[name]["recall@" + std::to_string(k)].get<double>(), 1e-12);
    EXPECT_NEAR(d->mean_rank, exp[name]["mean_rank"].get<double>(), 1e-9);
    EXPECT_NEAR(d->median_rank, exp[name]["median_rank"].get<double>(), 1e-12);
  }
  // Not a trivial case: some queries miss at k = 1 and some hit.
  EXPECT_GT(m.image_to_text.recall.at(1), 0.0);
  EXPECT_LT(m.text_to_image.recall.at(1), 1.0);
}

TEST(EvalMetrics, TiesBreakByLowerIndexAndSmallCases) {
  const float row[] = {0.5f, 0.9f, 0.5f, 0.1f};
  EXPECT_EQ(rank_of(row, 4, 1), 1);
  EXPECT_EQ(rank_of(row, 4, 0), 2);
  EXPECT_EQ(rank_of(row, 4, 2), 3);  // tied with index 0, which comes first
  EXPECT_EQ(rank_of(row, 4, 3), 4);
  // Two classes, 4 samples: top-5 is undefined (NaN, as CLIP_benchmark), recall per class.
  const float s[] = {1, 0, 0, 1, 1, 0, 1, 0};
  const int y[] = {0, 1, 1, 1};
  auto m = classification_metrics(s, 4, 2, y);
  EXPECT_DOUBLE_EQ(m.top1, 0.5);
  EXPECT_TRUE(std::isnan(m.top5));
  EXPECT_DOUBLE_EQ(m.per_class_recall[0], 1.0);
  EXPECT_DOUBLE_EQ(m.per_class_recall[1], 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.mean_per_class_recall, 2.0 / 3.0);
}

TEST(EvalMetrics, RetrievalAnyCaptionCountsAsHit) {
  // Image 0 has captions 0 and 2; caption 2 is its nearest, caption 0 is far.
  const float img[] = {1, 0, 0, 1};
  const float txt[] = {-1, 0.1f, 0, 1, 1, 0.05f};
  std::vector<int64_t> ti = {0, 1, 0};
  auto m = retrieval_metrics(img, 2, txt, 3, 2, ti, {1});
  EXPECT_EQ(m.image_to_text.ranks[0], 1);
  EXPECT_DOUBLE_EQ(m.image_to_text.recall.at(1), 1.0);
  EXPECT_EQ(m.text_to_image.ranks[0], 2);  // caption 0 points away from image 0
  EXPECT_DOUBLE_EQ(m.text_to_image.median_rank, 1.0);
}

TEST(EvalMetrics, BadInputThrows) {
  const float s[] = {1, 0};
  const int bad[] = {2};
  EXPECT_THROW(classification_metrics(s, 1, 2, bad), clip::Error);
  const float e[] = {1, 0};
  EXPECT_THROW(retrieval_metrics(e, 1, e, 1, 2, {3}), clip::Error);  // caption -> missing image
  const float img2[] = {1, 0, 0, 1};
  EXPECT_THROW(retrieval_metrics(img2, 2, e, 1, 2, {0}), clip::Error);  // image 1 has no caption
}
