// The logistic-regression probe against scikit-learn's LogisticRegression(solver="lbfgs") on
// the same Gaussian-mixture features at the same C (tools/eval_reference.py logreg):
//   * test accuracy within 0.5 points (the bar; in practice the predictions agree
//     almost everywhere because both reach the same strictly convex optimum);
//   * our objective, evaluated in double by the same formula, is no worse than sklearn's at its
//     solution by more than 1e-5 relative (float32 products; sklearn stops at its own tolerance).
#include <cmath>
#include <set>

#include "data/datasets.h"
#include "core/error.h"
#include "eval/linear_probe.h"
#include "eval/metrics.h"
#include "test_eval_util.h"

using namespace clip::eval;
using namespace clip::data;
using namespace clip::eval::testing;

namespace {

struct Data {
  std::vector<float> Xtr, Xte;
  std::vector<int> ytr, yte;
  int dim = 0, classes = 0;
  nlohmann::json expected;
};

Data load(const std::string& dir) {
  Data d;
  std::vector<int64_t> shape;
  d.Xtr = npy(dir + "/train_x.npy", &shape);
  d.dim = int(shape[1]);
  d.Xte = npy(dir + "/test_x.npy");
  d.ytr = npy_labels(dir + "/train_y.npy");
  d.yte = npy_labels(dir + "/test_y.npy");
  for (int v : d.ytr) d.classes = std::max(d.classes, v + 1);
  d.expected = read_json(dir + "/expected.json");
  return d;
}

// Penalised objective in double, exactly sklearn's (binomial for two classes).
double objective(const LogisticRegressionModel& m, const Data& d, double C) {
  const int K = m.num_classes, D = m.dim;
  double loss = 0, wsq = 0;
  for (size_t i = 0; i < d.ytr.size(); ++i) {
    std::vector<double> z(static_cast<size_t>(K));
    for (int k = 0; k < K; ++k) {
      double s = m.bias[size_t(k)];
      for (int j = 0; j < D; ++j) s += double(m.weights[size_t(k) * D + j]) * d.Xtr[i * D + j];
      z[size_t(k)] = s;
    }
    double mx = *std::max_element(z.begin(), z.end()), sum = 0;
    for (double v : z) sum += std::exp(v - mx);
    loss += std::log(sum) + mx - z[size_t(d.ytr[i])];
  }
  if (K == 2) {  // binomial parameterisation: w = w1 - w0
    for (int j = 0; j < D; ++j) {
      double w = double(m.weights[size_t(D) + j]) - m.weights[size_t(j)];
      wsq += w * w;
    }
  } else {
    for (float w : m.weights) wsq += double(w) * w;
  }
  return loss + 0.5 / C * wsq;
}

double test_accuracy(const LogisticRegressionModel& m, const Data& d) {
  std::vector<float> scores(d.yte.size() * size_t(m.num_classes));
  decision_function(m, d.Xte.data(), int64_t(d.yte.size()), scores.data());
  return topk_accuracy(scores.data(), int64_t(d.yte.size()), m.num_classes, d.yte.data(), 1);
}

void compare(const std::string& tag, const std::string& args) {
  const std::string dir = reference("logreg", tag, args);
  if (dir.empty()) GTEST_FAIL() << "numpy/scikit-learn not available to " CLIP_PYTHON;
  Data d = load(dir);
  const double C = d.expected["C"].get<double>();
  LogisticRegressionOptions o;
  o.C = C;
  auto m = fit_logistic_regression(d.Xtr.data(), d.ytr.data(), int64_t(d.ytr.size()), d.dim, d.classes, o);
  const double acc = test_accuracy(m, d), ref_acc = d.expected["test_accuracy"].get<double>();
  const double obj = objective(m, d, C), ref_obj = d.expected["train_objective"].get<double>();
  ::testing::Test::RecordProperty("accuracy", std::to_string(acc));
  ::testing::Test::RecordProperty("sklearn_accuracy", std::to_string(ref_acc));
  std::printf("  [%s] C=%g ours: acc %.4f obj %.6f (%d it, %s) | sklearn: acc %.4f obj %.6f\n", tag.c_str(), C, acc,
              obj, m.iterations, m.stop_reason.c_str(), ref_acc, ref_obj);
  EXPECT_NEAR(acc, ref_acc, 0.005);
  EXPECT_LE(obj, ref_obj * (1 + 1e-5));
  EXPECT_GT(acc, 1.5 / d.classes);  // learned something
}

}  // namespace

TEST(EvalLinearProbe, MatchesSklearnTenClasses) { compare("logreg10", "--classes 10 --C 0.316"); }
TEST(EvalLinearProbe, MatchesSklearnWeakPenalty) { compare("logreg10_c100", "--classes 10 --C 100 --seed 1"); }
TEST(EvalLinearProbe, MatchesSklearnStrongPenalty) { compare("logreg5_c001", "--classes 5 --C 0.001 --seed 2"); }
TEST(EvalLinearProbe, MatchesSklearnBinary) { compare("logreg2", "--classes 2 --C 0.5 --seed 3 --spread 1.5"); }

TEST(EvalLinearProbe, PenaltySearchAndFewShot) {
  const std::string dir = reference("logreg", "logreg10", "--classes 10 --C 0.316");
  if (dir.empty()) GTEST_FAIL() << "numpy/scikit-learn not available";
  Data d = load(dir);
  LogisticRegressionOptions o;
  auto r = search_penalty(d.Xtr.data(), d.ytr.data(), int64_t(d.ytr.size()), d.dim, d.classes, o, 0.2, 7);
  EXPECT_EQ(r.train_count + r.validation_count, int64_t(d.ytr.size()));
  EXPECT_NEAR(double(r.validation_count) / double(d.ytr.size()), 0.2, 0.01);
  EXPECT_GE(r.Cs.size(), 7u);
  EXPECT_GT(r.best_C, 1e-6);
  EXPECT_LT(r.best_C, 1e6);
  // The chosen C is at least as good on validation as every C tried (it is the argmax).
  for (double a : r.validation_accuracies) EXPECT_LE(a, r.best_validation_accuracy);
  // Few-shot: exactly k per class, reproducible for a seed, different across seeds.
  auto a = sample_few_shot(d.ytr.data(), int64_t(d.ytr.size()), d.classes, 4, 1);
  auto b = sample_few_shot(d.ytr.data(), int64_t(d.ytr.size()), d.classes, 4, 1);
  auto c = sample_few_shot(d.ytr.data(), int64_t(d.ytr.size()), d.classes, 4, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), size_t(4 * d.classes));
  std::vector<int> per(static_cast<size_t>(d.classes), 0);
  for (auto i : a) ++per[size_t(d.ytr[size_t(i)])];
  for (int v : per) EXPECT_EQ(v, 4);
  EXPECT_THROW(sample_few_shot(d.ytr.data(), int64_t(d.ytr.size()), d.classes, 100000, 1), clip::Error);
}

TEST(EvalLinearProbe, BadInputThrows) {
  const float X[] = {1, 2, 3, 4};
  const int y[] = {0, 5};
  LogisticRegressionOptions o;
  EXPECT_THROW(fit_logistic_regression(X, y, 2, 2, 2, o), clip::Error);  // label out of range
  const int y2[] = {0, 1};
  o.C = -1;
  EXPECT_THROW(fit_logistic_regression(X, y2, 2, 2, 2, o), clip::Error);
}
