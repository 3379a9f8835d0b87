#pragma once
// Finite-difference check of a layer's backward pass, shared by the training tests (double
// precision). L = sum(w * forward()) for a fixed random w; the analytic gradients come from
// backward(dy = w, grads) into buffers prefilled with kPrefill (so a backward that overwrites
// instead of accumulating fails); the numeric ones from central differences (h = 1e-6) at up
// to max_probes evenly spread elements of each input. Passes when every probe is within
// tol x (largest |gradient| of that input).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace clip::test {

using Vec = std::vector<double>;

inline Vec random_vec(size_t n, std::mt19937& gen, double scale = 1.0, double mean = 0.0) {
  std::normal_distribution<double> d(mean, scale);
  Vec v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

struct Input {
  std::string name;
  Vec* value;
};

constexpr double kPrefill = 0.25;  // gradients start here to check accumulation

// forward(): the layer output for the current inputs.
// backward(dy, grads): the layer backward; grads[i] has inputs[i]'s size, prefilled.
inline void fd_check(const std::string& layer, const std::vector<Input>& inputs,
                     const std::function<Vec()>& forward,
                     const std::function<void(const Vec&, std::vector<Vec>&)>& backward,
                     double tol = 1e-7, size_t max_probes = 40) {
  std::mt19937 gen(7);
  const Vec y = forward();
  const Vec w = random_vec(y.size(), gen);
  auto probe = [&]() {
    const Vec out = forward();
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += w[i] * out[i];
    return s;
  };
  std::vector<Vec> grads;
  for (const auto& in : inputs) grads.emplace_back(in.value->size(), kPrefill);
  backward(w, grads);
  for (auto& g : grads)
    for (auto& x : g) x -= kPrefill;
  const double h = 1e-6;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Vec& x = *inputs[k].value;
    double gmax = 0;
    for (double g : grads[k]) gmax = std::max(gmax, std::abs(g));
    ASSERT_GT(gmax, 0.0) << layer << ": gradient of " << inputs[k].name << " is all zero";
    // Probe every element of small inputs, an even spread of the others.
    const size_t n = x.size(), step = std::max<size_t>(1, n / max_probes);
    double worst = 0;
    for (size_t i = 0; i < n; i += step) {
      const double saved = x[i];
      x[i] = saved + h;
      const double lp = probe();
      x[i] = saved - h;
      const double lm = probe();
      x[i] = saved;
      const double numeric = (lp - lm) / (2 * h);
      worst = std::max(worst, std::abs(numeric - grads[k][i]) / gmax);
    }
    EXPECT_LT(worst, tol) << layer << ": d/d" << inputs[k].name << " differs from finite "
                          << "differences by " << worst << " (relative to max |grad| " << gmax
                          << ")";
  }
}

}  // namespace clip::test
