#include "backend/matmul.h"
#include "eval/linear_probe.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>

#include "core/error.h"
#include "core/rng.h"
#include "eval/metrics.h"

namespace clip::eval {
namespace {

// The penalised multinomial log-loss and its gradient. Parameters are packed as
// [W (K x D) row-major | b (K)] in double; products run in float32 through sgemm.
class SoftmaxObjective {
 public:
  SoftmaxObjective(const float* X, const int* y, int64_t n, int dim, int K, double lambda)
      : X_(X), y_(y), n_(n), D_(dim), K_(K), lambda_(lambda),
        W_(size_t(K) * dim), G_(size_t(K) * dim),
        block_(std::max<int64_t>(1, std::min<int64_t>(n, std::max<int64_t>(1024, (int64_t(1) << 21) / K)))),
        P_(size_t(block_) * K) {}

  size_t size() const { return size_t(K_) * D_ + K_; }

  double operator()(const double* w, double* g) {
    const size_t KD = size_t(K_) * D_;
    for (size_t i = 0; i < KD; ++i) W_[i] = float(w[i]);
    ++evaluations;
    const double loss = K_ <= kFusedMaxClasses ? fused(w, g) : blocked_gemm(w, g);
    double wsq = 0;
    for (size_t i = 0; i < KD; ++i) {
      wsq += w[i] * w[i];
      g[i] += lambda_ * w[i];
    }
    return loss + 0.5 * lambda_ * wsq;
  }

  int evaluations = 0;

 private:
  // Few classes (the common probe): OpenBLAS's sgemm is slow for a 10-column product, so
  // each thread streams its rows once, computing the K logits, the softmax and the rank-1
  // gradient update while the row is in L1. Gradients are summed in float per chunk of rows
  // and folded into double, so their error does not grow with n.
  static constexpr int kFusedMaxClasses = 32;
  double fused(const double* w, double* g) {
    const size_t KD = size_t(K_) * D_;
    const double* b = w + KD;
    const int nthreads = omp_get_max_threads();
    std::vector<double> g_thread(size_t(nthreads) * (KD + K_), 0.0);
    double loss = 0;
#pragma omp parallel reduction(+ : loss)
    {
      double* gt = g_thread.data() + size_t(omp_get_thread_num()) * (KD + K_);
      std::vector<float> acc(KD, 0.0f);
      float z[4][kFusedMaxClasses];
      double p[kFusedMaxClasses];
      int in_chunk = 0;
      const float* W = W_.data();
      auto fold = [&]() {
        for (size_t i = 0; i < KD; ++i) { gt[i] += acc[i]; acc[i] = 0.0f; }
        in_chunk = 0;
      };
      // Tiles of 4 rows: four independent FMA chains per weight row (the dot products are
      // latency-bound otherwise) and one pass over the gradient accumulator per tile.
      const int64_t tiles = (n_ + 3) / 4;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t i0 = t * 4;
        const int rows = int(std::min<int64_t>(4, n_ - i0));
        const float* x[4];
        for (int r = 0; r < 4; ++r) x[r] = X_ + (i0 + std::min(r, rows - 1)) * D_;
        const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
        for (int k = 0; k < K_; ++k) {
          const float* wk = W + size_t(k) * D_;
          float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
          for (int j = 0; j < D_; ++j) {
            s0 += wk[j] * x0[j];
            s1 += wk[j] * x1[j];
            s2 += wk[j] * x2[j];
            s3 += wk[j] * x3[j];
          }
          z[0][k] = s0; z[1][k] = s1; z[2][k] = s2; z[3][k] = s3;
        }
        float pf[4][kFusedMaxClasses] = {};
        for (int r = 0; r < rows; ++r) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int k = 0; k < K_; ++k) mx = std::max(mx, double(z[r][k]) + b[k]);
          double sum = 0;
          for (int k = 0; k < K_; ++k) sum += (p[k] = std::exp(double(z[r][k]) + b[k] - mx));
          const int yi = y_[i0 + r];
          loss += std::log(sum) + mx - (double(z[r][yi]) + b[yi]);
          const double inv = 1.0 / sum;
          for (int k = 0; k < K_; ++k) {
            const double pk = p[k] * inv - (k == yi ? 1.0 : 0.0);
            gt[KD + k] += pk;
            pf[r][k] = float(pk);
          }
        }
        for (int k = 0; k < K_; ++k) {
          float* ak = acc.data() + size_t(k) * D_;
          const float p0 = pf[0][k], p1 = pf[1][k], p2 = pf[2][k], p3 = pf[3][k];
#pragma omp simd
          for (int j = 0; j < D_; ++j) ak[j] += p0 * x0[j] + p1 * x1[j] + p2 * x2[j] + p3 * x3[j];
        }
        if (++in_chunk == 64) fold();
      }
      fold();
    }
    std::fill(g, g + KD + K_, 0.0);
    for (int t = 0; t < nthreads; ++t)
      for (size_t i = 0; i < KD + K_; ++i) g[i] += g_thread[size_t(t) * (KD + K_) + i];
    return loss;
  }

  // Many classes: blocks of rows through sgemm (compute-bound there), softmax in threads.
  double blocked_gemm(const double* w, double* g) {
    const size_t KD = size_t(K_) * D_;
    const double* b = w + KD;
    std::fill(G_.begin(), G_.end(), 0.0f);
    std::vector<double> gb(size_t(K_), 0.0);
    double loss = 0;
    const int nthreads = omp_get_max_threads();
    std::vector<double> gb_thread(size_t(nthreads) * K_);
    for (int64_t r0 = 0; r0 < n_; r0 += block_) {
      const int64_t nb = std::min(block_, n_ - r0);
      const float* Xb = X_ + r0 * D_;
      // logits [nb, K] = Xb [nb, D] * W^T
      clip::sgemm(false, true, int(nb), K_, D_, 1.0f, Xb, D_, W_.data(), D_, 0.0f, P_.data(), K_);
      std::fill(gb_thread.begin(), gb_thread.end(), 0.0);
      double block_loss = 0;
#pragma omp parallel reduction(+ : block_loss)
      {
        double* gbt = gb_thread.data() + size_t(omp_get_thread_num()) * K_;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nb; ++i) {
          float* z = P_.data() + i * K_;
          double mx = -std::numeric_limits<double>::infinity();
          for (int k = 0; k < K_; ++k) mx = std::max(mx, double(z[k]) + b[k]);
          double sum = 0;
          for (int k = 0; k < K_; ++k) sum += std::exp(double(z[k]) + b[k] - mx);
          const int yi = y_[r0 + i];
          block_loss += std::log(sum) + mx - (double(z[yi]) + b[yi]);
          const double inv = 1.0 / sum;
          for (int k = 0; k < K_; ++k) {
            double p = std::exp(double(z[k]) + b[k] - mx) * inv - (k == yi ? 1.0 : 0.0);
            z[k] = float(p);
            gbt[k] += p;
          }
        }
      }
      loss += block_loss;
      for (int t = 0; t < nthreads; ++t)
        for (int k = 0; k < K_; ++k) gb[size_t(k)] += gb_thread[size_t(t) * K_ + k];
      // G [K, D] += P^T [K, nb] * Xb [nb, D]
      clip::sgemm(true, false, K_, D_, int(nb), 1.0f, P_.data(), K_, Xb, D_, 1.0f, G_.data(), D_);
    }
    for (size_t i = 0; i < KD; ++i) g[i] = double(G_[i]);
    for (int k = 0; k < K_; ++k) g[KD + k] = gb[size_t(k)];
    return loss;
  }

  const float* X_;
  const int* y_;
  int64_t n_;
  int D_, K_;
  double lambda_;
  std::vector<float> W_, G_;
  int64_t block_;
  std::vector<float> P_;
};

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::fabs(v));
  return m;
}

// Minimiser of the cubic through (a, fa, da) and (b, fb, db), kept inside the bracket's
// middle 80% (bisection when the cubic is degenerate): Nocedal & Wright, eq. 3.59.
double cubic_step(double a, double fa, double da, double b, double fb, double db) {
  const double lo = std::min(a, b), hi = std::max(a, b), width = hi - lo;
  double x = 0.5 * (a + b);
  const double d1 = da + db - 3.0 * (fa - fb) / (a - b);
  const double disc = d1 * d1 - da * db;
  if (disc >= 0 && std::isfinite(disc)) {
    const double d2 = std::copysign(std::sqrt(disc), b - a);
    const double denom = db - da + 2.0 * d2;
    if (denom != 0) x = b - (b - a) * (db + d2 - d1) / denom;
  }
  if (!std::isfinite(x)) x = 0.5 * (a + b);
  return std::clamp(x, lo + 0.1 * width, hi - 0.1 * width);
}

struct Point {
  double a, f, d;  // step, objective, directional derivative
};

// Strong-Wolfe line search (Nocedal & Wright, Algorithms 3.5 and 3.6). On success x_new,
// f_new and g_new hold the accepted point; returns false when no step with sufficient
// decrease was found (the objective is flat to working precision along p).
template <class Objective>
bool line_search(Objective& fun, const std::vector<double>& x, double f0, const std::vector<double>& p,
                 double d0, double step, std::vector<double>& x_new, double& f_new, std::vector<double>& g_new) {
  const double c1 = 1e-4, c2 = 0.9;
  const int max_evals = 25;
  int evals = 0;
  auto eval = [&](double a) {
    for (size_t i = 0; i < x.size(); ++i) x_new[i] = x[i] + a * p[i];
    f_new = fun(x_new.data(), g_new.data());
    ++evals;
    return Point{a, f_new, dot(g_new, p)};
  };
  // Keeps the best point that satisfied sufficient decrease, to fall back on.
  bool have_ok = false;
  Point ok{0, f0, d0};
  auto remember = [&](const Point& pt) {
    if (pt.f <= f0 + c1 * pt.a * d0 && pt.f < ok.f) { ok = pt; have_ok = true; }
  };
  auto finish_with_ok = [&]() {
    if (!have_ok) return false;
    if (x_new.size() && (f_new != ok.f)) eval(ok.a);
    return true;
  };
  auto zoom = [&](Point lo, Point hi) {
    while (evals < max_evals) {
      if (std::fabs(hi.a - lo.a) <= 1e-12 * std::max(1.0, std::fabs(lo.a))) break;
      const Point pt = eval(cubic_step(lo.a, lo.f, lo.d, hi.a, hi.f, hi.d));
      remember(pt);
      if (pt.f > f0 + c1 * pt.a * d0 || pt.f >= lo.f) {
        hi = pt;
      } else {
        if (std::fabs(pt.d) <= -c2 * d0) return true;
        if (pt.d * (hi.a - lo.a) >= 0) hi = lo;
        lo = pt;
      }
    }
    return finish_with_ok();
  };
  Point prev{0, f0, d0};
  double a = step;
  for (int i = 0; evals < max_evals; ++i) {
    const Point pt = eval(a);
    if (!std::isfinite(pt.f)) {  // overflow far out: shrink towards the last good step
      a = 0.5 * (prev.a + a);
      continue;
    }
    remember(pt);
    if (pt.f > f0 + c1 * pt.a * d0 || (i > 0 && pt.f >= prev.f)) return zoom(prev, pt);
    if (std::fabs(pt.d) <= -c2 * d0) return true;
    if (pt.d >= 0) return zoom(pt, prev);
    prev = pt;
    a *= 2.0;
  }
  return finish_with_ok();
}

}  // namespace

LogisticRegressionModel fit_logistic_regression(const float* X, const int* y, int64_t n, int dim,
                                                int num_classes, const LogisticRegressionOptions& opt,
                                                const LogisticRegressionModel* warm_start) {
  if (n <= 0 || dim <= 0) throw Error("logistic regression: no training data");
  if (num_classes < 2) throw Error("logistic regression: needs at least two classes, got " + std::to_string(num_classes));
  if (!(opt.C > 0) || !std::isfinite(opt.C)) throw Error("logistic regression: C must be positive, got " + std::to_string(opt.C));
  for (int64_t i = 0; i < n; ++i)
    if (y[i] < 0 || y[i] >= num_classes)
      throw Error("logistic regression: label " + std::to_string(y[i]) + " at row " + std::to_string(i) +
                  " is outside [0, " + std::to_string(num_classes) + ")");
  // Binary: scikit-learn's binomial penalty 1/(2C)||w1-w0||^2 equals 1/C (||w0||^2+||w1||^2)/2
  // at the symmetric optimum, i.e. lambda doubles (see the header).
  const double lambda = (num_classes == 2 ? 2.0 : 1.0) / opt.C;
  SoftmaxObjective fun(X, y, n, dim, num_classes, lambda);
  const size_t P = fun.size(), KD = size_t(num_classes) * dim;

  std::vector<double> x(P, 0.0), g(P), x_new(P), g_new(P), p(P);
  if (warm_start && warm_start->num_classes == num_classes && warm_start->dim == dim) {
    for (size_t i = 0; i < KD; ++i) x[i] = warm_start->weights[i];
    for (int k = 0; k < num_classes; ++k) x[KD + k] = warm_start->bias[size_t(k)];
  }
  double f = fun(x.data(), g.data());
  std::deque<std::vector<double>> S, Yv;
  std::deque<double> rho;
  std::vector<double> alpha(size_t(std::max(1, opt.history)));

  LogisticRegressionModel m;
  m.num_classes = num_classes;
  m.dim = dim;
  m.C = opt.C;
  m.stop_reason = "max_iter";
  int iter = 0;
  bool steepest = true;  // no curvature pairs yet
  while (true) {
    const double gmax = max_abs(g);
    if (gmax <= opt.gtol) { m.stop_reason = "gtol"; break; }
    if (iter >= opt.max_iter) { m.stop_reason = "max_iter"; break; }
    // Two-loop recursion: p = -H g.
    for (size_t i = 0; i < P; ++i) p[i] = -g[i];
    const int mem = int(S.size());
    for (int j = mem - 1; j >= 0; --j) {
      alpha[size_t(j)] = rho[size_t(j)] * dot(S[size_t(j)], p);
      for (size_t i = 0; i < P; ++i) p[i] -= alpha[size_t(j)] * Yv[size_t(j)][i];
    }
    if (mem > 0) {
      const double gamma = dot(S.back(), Yv.back()) / dot(Yv.back(), Yv.back());
      for (auto& v : p) v *= gamma;
    }
    for (int j = 0; j < mem; ++j) {
      const double beta = rho[size_t(j)] * dot(Yv[size_t(j)], p);
      for (size_t i = 0; i < P; ++i) p[i] += (alpha[size_t(j)] - beta) * S[size_t(j)][i];
    }
    double d0 = dot(g, p);
    if (!(d0 < 0)) {  // not a descent direction (numerical trouble): restart from steepest descent
      S.clear(); Yv.clear(); rho.clear();
      for (size_t i = 0; i < P; ++i) p[i] = -g[i];
      d0 = dot(g, p);
      steepest = true;
    }
    const double step = steepest ? std::min(1.0, 1.0 / std::sqrt(dot(p, p))) : 1.0;
    double f_new = f;
    if (!line_search(fun, x, f, p, d0, step, x_new, f_new, g_new)) {
      if (!S.empty()) {  // stale curvature: drop the memory and retry once along -g
        S.clear(); Yv.clear(); rho.clear();
        steepest = true;
        continue;
      }
      m.stop_reason = "line_search";
      break;
    }
    ++iter;
    // Curvature pair.
    std::vector<double> s(P), yy(P);
    for (size_t i = 0; i < P; ++i) { s[i] = x_new[i] - x[i]; yy[i] = g_new[i] - g[i]; }
    const double sy = dot(s, yy), yy2 = dot(yy, yy);
    if (sy > 1e-10 * yy2 && sy > 0) {
      if (int(S.size()) >= opt.history) { S.pop_front(); Yv.pop_front(); rho.pop_front(); }
      S.push_back(std::move(s)); Yv.push_back(std::move(yy)); rho.push_back(1.0 / sy);
      steepest = false;
    }
    const double rel = (f - f_new) / std::max({std::fabs(f), std::fabs(f_new), 1.0});
    x.swap(x_new);
    g.swap(g_new);
    f = f_new;
    if (opt.verbose)
      std::fprintf(stderr, "  lbfgs C=%g iter %d f=%.9g |g|max=%.3g evals=%d\n", opt.C, iter, f, max_abs(g),
                   fun.evaluations);
    if (rel <= opt.ftol) { m.stop_reason = "ftol"; break; }
  }
  m.iterations = iter;
  m.evaluations = fun.evaluations;
  m.objective = f;
  m.gradient_max = max_abs(g);
  m.weights.resize(KD);
  m.bias.resize(size_t(num_classes));
  for (size_t i = 0; i < KD; ++i) m.weights[i] = float(x[i]);
  for (int k = 0; k < num_classes; ++k) m.bias[size_t(k)] = float(x[KD + k]);
  return m;
}

void decision_function(const LogisticRegressionModel& model, const float* X, int64_t n, float* scores) {
  if (n == 0) return;
  const int K = model.num_classes, D = model.dim;
  clip::sgemm(false, true, int(n), K, D, 1.0f, X, D, model.weights.data(), D, 0.0f, scores, K);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < K; ++k) scores[i * K + k] += model.bias[size_t(k)];
}

void gather_rows(const float* X, const int* y, int dim, const std::vector<int64_t>& indices,
                 std::vector<float>& X_out, std::vector<int>& y_out) {
  X_out.resize(indices.size() * size_t(dim));
  y_out.resize(indices.size());
  for (size_t r = 0; r < indices.size(); ++r) {
    std::copy(X + indices[r] * dim, X + (indices[r] + 1) * dim, X_out.begin() + r * dim);
    y_out[r] = y[indices[r]];
  }
}

static std::vector<std::vector<int64_t>> indices_by_class(const int* y, int64_t n, int num_classes) {
  std::vector<std::vector<int64_t>> by(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] < 0 || y[i] >= num_classes)
      throw Error("label " + std::to_string(y[i]) + " at row " + std::to_string(i) + " is outside [0, " +
                  std::to_string(num_classes) + ")");
    by[size_t(y[i])].push_back(i);
  }
  return by;
}

static void shuffle(std::vector<int64_t>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.next_u64() % i]);
}

void stratified_split(const int* y, int64_t n, int num_classes, double fraction, uint64_t seed,
                      std::vector<int64_t>& first, std::vector<int64_t>& second) {
  auto by = indices_by_class(y, n, num_classes);
  Rng rng(seed);
  first.clear();
  second.clear();
  for (auto& idx : by) {
    shuffle(idx, rng);
    size_t take = size_t(std::llround(fraction * double(idx.size())));
    if (idx.size() >= 2) take = std::clamp<size_t>(take, 1, idx.size() - 1);
    else take = 0;
    second.insert(second.end(), idx.begin(), idx.begin() + long(take));
    first.insert(first.end(), idx.begin() + long(take), idx.end());
  }
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
}

std::vector<int64_t> sample_few_shot(const int* y, int64_t n, int num_classes, int shots, uint64_t seed) {
  if (shots <= 0) throw Error("few-shot: shots must be positive, got " + std::to_string(shots));
  auto by = indices_by_class(y, n, num_classes);
  Rng rng(seed);
  std::vector<int64_t> out;
  for (int c = 0; c < num_classes; ++c) {
    auto& idx = by[size_t(c)];
    if (int64_t(idx.size()) < shots)
      throw Error("few-shot: class " + std::to_string(c) + " has " + std::to_string(idx.size()) +
                  " training samples, fewer than " + std::to_string(shots) + " shots");
    shuffle(idx, rng);
    out.insert(out.end(), idx.begin(), idx.begin() + shots);
  }
  std::sort(out.begin(), out.end());
  return out;
}

PenaltySearchResult search_penalty(const float* X, const int* y, int64_t n, int dim, int num_classes,
                                   const LogisticRegressionOptions& options, double validation_fraction,
                                   uint64_t seed) {
  if (!(validation_fraction > 0 && validation_fraction < 1))
    throw Error("penalty search: validation fraction must be in (0, 1)");
  std::vector<int64_t> tr, va;
  stratified_split(y, n, num_classes, validation_fraction, seed, tr, va);
  if (tr.empty() || va.empty()) throw Error("penalty search: too few samples for a validation split");
  std::vector<float> Xtr, Xva;
  std::vector<int> ytr, yva;
  gather_rows(X, y, dim, tr, Xtr, ytr);
  gather_rows(X, y, dim, va, Xva, yva);
  PenaltySearchResult r;
  r.train_count = int64_t(tr.size());
  r.validation_count = int64_t(va.size());
  std::vector<float> scores(va.size() * size_t(num_classes));
  struct Fit { double log_c; double acc; LogisticRegressionModel model; };
  std::vector<Fit> fits;
  auto evaluate = [&](double log_c) -> double {
    for (auto& f : fits)
      if (std::fabs(f.log_c - log_c) < 1e-9) return f.acc;
    // Warm start from the nearest C already solved.
    const LogisticRegressionModel* warm = nullptr;
    double best_dist = 1e300;
    for (auto& f : fits)
      if (std::fabs(f.log_c - log_c) < best_dist) { best_dist = std::fabs(f.log_c - log_c); warm = &f.model; }
    LogisticRegressionOptions o = options;
    o.C = std::pow(10.0, log_c);
    auto model = fit_logistic_regression(Xtr.data(), ytr.data(), int64_t(ytr.size()), dim, num_classes, o, warm);
    decision_function(model, Xva.data(), int64_t(yva.size()), scores.data());
    const double acc = topk_accuracy(scores.data(), int64_t(yva.size()), num_classes, yva.data(), 1);
    r.Cs.push_back(o.C);
    r.validation_accuracies.push_back(acc);
    if (options.verbose)
      std::fprintf(stderr, "  penalty search: C=%-10.4g validation accuracy %.4f (%d iterations, %s)\n", o.C, acc,
                   model.iterations, model.stop_reason.c_str());
    fits.push_back({log_c, acc, std::move(model)});
    return acc;
  };
  // Ties prefer the smaller C (the stronger penalty).
  auto better = [](double acc, double log_c, double best_acc, double best_log_c) {
    return acc > best_acc || (acc == best_acc && log_c < best_log_c);
  };
  double best_log_c = -6, best_acc = -1;
  for (double lc = -6; lc <= 6.0 + 1e-9; lc += 2) {
    const double acc = evaluate(lc);
    if (better(acc, lc, best_acc, best_log_c)) { best_acc = acc; best_log_c = lc; }
  }
  for (double step : {1.0, 0.5, 0.25}) {
    const double centre = best_log_c;
    for (double lc : {centre - step, centre + step}) {
      if (lc < -6 - 1e-9 || lc > 6 + 1e-9) continue;
      const double acc = evaluate(lc);
      if (better(acc, lc, best_acc, best_log_c)) { best_acc = acc; best_log_c = lc; }
    }
  }
  r.best_C = std::pow(10.0, best_log_c);
  r.best_validation_accuracy = best_acc;
  return r;
}

}  // namespace clip::eval
