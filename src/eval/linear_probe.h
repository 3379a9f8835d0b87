#pragma once
// Linear probes on frozen features: multinomial logistic regression with an L2 penalty,
// solved by L-BFGS, with the objective scikit-learn's LogisticRegression(solver="lbfgs",
// multi_class="multinomial") minimises, so accuracies at the same C are comparable:
//
//     sum_i -log softmax(W x_i + b)[y_i]  +  1/(2C) * ||W||^2        (b is not penalised)
//
// For two classes scikit-learn fits the binomial model (one weight vector w = w_1 - w_0 with
// penalty 1/(2C)||w||^2); the symmetric two-row multinomial with penalty 1/C * ||W||^2 has
// exactly that minimiser, so we use it for K = 2.
//
// Features are float32; the products X W^T and P^T X run through OpenBLAS sgemm in row
// blocks, the softmax in OpenMP threads; the loss and the L-BFGS state are double.
#include <cstdint>
#include <string>
#include <vector>

namespace clip::eval {

struct LogisticRegressionOptions {
  double C = 0.316;       // inverse penalty strength, as scikit-learn's C
  int max_iter = 1000;    // L-BFGS iterations
  double gtol = 1e-4;     // stop when max |gradient| <= gtol (scikit-learn's tol)
  // Stop when the relative decrease of the objective over one iteration is <= ftol
  // (scipy's L-BFGS-B default is 2.2e-9; float32 products cannot resolve that, so ours is
  // the float32 resolution of a sum of n log-losses).
  double ftol = 1e-7;
  int history = 10;       // L-BFGS memory (scipy's default m = 10)
  bool verbose = false;
};

struct LogisticRegressionModel {
  int num_classes = 0, dim = 0;
  std::vector<float> weights;  // [num_classes, dim], row-major
  std::vector<float> bias;     // [num_classes]
  double C = 0;
  int iterations = 0, evaluations = 0;
  double objective = 0, gradient_max = 0;
  std::string stop_reason;     // "gtol", "ftol", "max_iter", "line_search"
};

// Fits on n rows of X [n, dim] with labels y in [0, num_classes). `warm_start` (optional, same
// shape) initialises W and b; otherwise they start at zero (as scikit-learn).
LogisticRegressionModel fit_logistic_regression(const float* X, const int* y, int64_t n, int dim,
                                                int num_classes, const LogisticRegressionOptions& options,
                                                const LogisticRegressionModel* warm_start = nullptr);

// scores[n, num_classes] = X W^T + b.
void decision_function(const LogisticRegressionModel& model, const float* X, int64_t n, float* scores);

// Rows of X / y selected by `indices`, copied contiguously.
void gather_rows(const float* X, const int* y, int dim, const std::vector<int64_t>& indices,
                 std::vector<float>& X_out, std::vector<int>& y_out);

struct PenaltySearchResult {
  double best_C = 0;
  double best_validation_accuracy = 0;
  std::vector<double> Cs;                    // in the order tried
  std::vector<double> validation_accuracies;
  int64_t train_count = 0, validation_count = 0;
};

// Chooses C on a validation split carved from the training set (a seeded, stratified
// `validation_fraction` of each class): a sweep over C = 10^-6 .. 10^6 (every 2 decades),
// then refinement around the best (steps of 1, 1/2 and 1/4 decade), each fit warm-started
// from the nearest solved C. Ties go to the smaller C (stronger penalty).
PenaltySearchResult search_penalty(const float* X, const int* y, int64_t n, int dim, int num_classes,
                                   const LogisticRegressionOptions& options, double validation_fraction = 0.2,
                                   uint64_t seed = 0);

// Indices of `shots` samples per class chosen by a seeded RNG (reproducible on every platform:
// own splitmix64 + Fisher-Yates). Throws clip::Error if a class has fewer than `shots` samples.
std::vector<int64_t> sample_few_shot(const int* y, int64_t n, int num_classes, int shots, uint64_t seed);

// A stratified split: `fraction` of each class (at least one sample when the class has two or
// more) goes to `second`, the rest to `first`; both sorted.
void stratified_split(const int* y, int64_t n, int num_classes, double fraction, uint64_t seed,
                      std::vector<int64_t>& first, std::vector<int64_t>& second);


}  // namespace clip::eval
