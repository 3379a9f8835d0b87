#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace clip::train {

template <typename T>
ClipLossResult<T> clip_loss(const T* image_features, const T* text_features, int64_t N,
                            int64_t E, T logit_scale, T* d_image, T* d_text, T* d_logit_scale,
                            bool accumulate) {
  if (N <= 0 || E <= 0) throw Error("clip_loss: empty batch or feature size");
  // Normalise (double).
  const size_t NE = size_t(N * E);
  std::vector<double> I(NE), Tn(NE), in(static_cast<size_t>(N)), tn(static_cast<size_t>(N));
  auto normalise = [&](const T* x, std::vector<double>& y, std::vector<double>& norm) {
    for (int64_t i = 0; i < N; ++i) {
      double s = 0;
      for (int64_t e = 0; e < E; ++e) s += double(x[i * E + e]) * double(x[i * E + e]);
      norm[i] = std::sqrt(s);
      if (!(norm[i] > 0)) throw Error("clip_loss: a feature vector has zero (or non-finite) norm");
      for (int64_t e = 0; e < E; ++e) y[i * E + e] = double(x[i * E + e]) / norm[i];
    }
  };
  normalise(image_features, I, in);
  normalise(text_features, Tn, tn);
  const double scale = std::exp(double(logit_scale));
  std::vector<double> S(size_t(N * N));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t e = 0; e < E; ++e) s += I[i * E + e] * Tn[j * E + e];
      S[i * N + j] = scale * s;
    }
  // Softmax over rows (image -> text) and over columns (text -> image).
  std::vector<double> Prow(S.size()), Pcol(S.size());
  ClipLossResult<T> r;
  for (int64_t i = 0; i < N; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j < N; ++j) mx = std::max(mx, S[i * N + j]);
    double sum = 0;
    for (int64_t j = 0; j < N; ++j) sum += std::exp(S[i * N + j] - mx);
    for (int64_t j = 0; j < N; ++j) Prow[i * N + j] = std::exp(S[i * N + j] - mx) / sum;
    r.loss_image_to_text += (mx + std::log(sum) - S[i * N + i]) / double(N);
  }
  for (int64_t j = 0; j < N; ++j) {
    double mx = -INFINITY;
    for (int64_t i = 0; i < N; ++i) mx = std::max(mx, S[i * N + j]);
    double sum = 0;
    for (int64_t i = 0; i < N; ++i) sum += std::exp(S[i * N + j] - mx);
    for (int64_t i = 0; i < N; ++i) Pcol[i * N + j] = std::exp(S[i * N + j] - mx) / sum;
    r.loss_text_to_image += (mx + std::log(sum) - S[j * N + j]) / double(N);
  }
  r.loss = 0.5 * (r.loss_image_to_text + r.loss_text_to_image);

  // dL/dS = ((Prow - Id) + (Pcol - Id)) / (2N).
  std::vector<double> dS(S.size());
  double dt = 0;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const double g = (Prow[i * N + j] + Pcol[i * N + j] - (i == j ? 2.0 : 0.0)) / (2.0 * N);
      dS[i * N + j] = g;
      dt += g * S[i * N + j];  // S = exp(t) G, so dS/dt = S
    }
  if (d_logit_scale) *d_logit_scale = accumulate ? *d_logit_scale + T(dt) : T(dt);
  // Through the cosine matrix and the normalisations:
  //   dI_e = exp(t) dS T_e,  dT_e = exp(t) dS^T I_e,  dx = (dy - y <y, dy>) / ||x||.
  auto back = [&](const std::vector<double>& Y, const std::vector<double>& Other,
                  const std::vector<double>& norm, bool transpose, T* dx) {
    if (!dx) return;
    std::vector<double> dy(static_cast<size_t>(E));
    for (int64_t i = 0; i < N; ++i) {
      std::fill(dy.begin(), dy.end(), 0.0);
      for (int64_t j = 0; j < N; ++j) {
        const double g = scale * (transpose ? dS[j * N + i] : dS[i * N + j]);
        for (int64_t e = 0; e < E; ++e) dy[e] += g * Other[j * E + e];
      }
      double dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += Y[i * E + e] * dy[e];
      for (int64_t e = 0; e < E; ++e) {
        const T v = T((dy[e] - Y[i * E + e] * dot) / norm[i]);
        dx[i * E + e] = accumulate ? dx[i * E + e] + v : v;
      }
    }
  };
  back(I, Tn, in, false, d_image);
  back(Tn, I, tn, true, d_text);
  return r;
}

template ClipLossResult<float> clip_loss<float>(const float*, const float*, int64_t, int64_t,
                                                float, float*, float*, float*, bool);
template ClipLossResult<double> clip_loss<double>(const double*, const double*, int64_t,
                                                  int64_t, double, double*, double*, double*,
                                                  bool);

}  // namespace clip::train
