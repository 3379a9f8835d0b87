#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <string>
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


template <typename T>
ClipLossResult<T> clip_loss_rows(const T* image_features, const T* text_features, int64_t N, int64_t E,
                                 T logit_scale, int64_t row0, int64_t rows, T* d_image, T* d_text,
                                 T* d_logit_scale) {
  if (N <= 0 || E <= 0) throw Error("clip_loss: empty batch or feature size");
  if (row0 < 0 || rows <= 0 || row0 + rows > N)
    throw Error("clip_loss: rows " + std::to_string(row0) + ".." + std::to_string(row0 + rows) + " outside a batch of " +
                std::to_string(N));
  const size_t NE = size_t(N * E);
  std::vector<double> I(NE), Tn(NE), in(static_cast<size_t>(N)), tn(static_cast<size_t>(N));
  auto normalise = [&](const T* x, std::vector<double>& y, std::vector<double>& norm) {
    for (int64_t i = 0; i < N; ++i) {
      double q = 0;
      for (int64_t e = 0; e < E; ++e) q += double(x[i * E + e]) * double(x[i * E + e]);
      norm[i] = std::sqrt(q);
      if (!(norm[i] > 0)) throw Error("clip_loss: a feature vector has zero (or non-finite) norm");
      for (int64_t e = 0; e < E; ++e) y[i * E + e] = double(x[i * E + e]) / norm[i];
    }
  };
  normalise(image_features, I, in);
  normalise(text_features, Tn, tn);
  const double scale = std::exp(double(logit_scale));
  auto dot = [&](int64_t i, int64_t j) {  // scale <I_i, T_j>
    double q = 0;
    for (int64_t e = 0; e < E; ++e) q += I[i * E + e] * Tn[j * E + e];
    return scale * q;
  };
  // A[r, j] = dL/dS[row0 + r, j] (the share's image rows), B[r, i] = dL/dS[i, row0 + r] (its text
  // columns); S kept beside them for dL/dt.
  const size_t RN = size_t(rows * N);
  std::vector<double> SA(RN), SB(RN), A(RN), B(RN);
  ClipLossResult<T> r;
  const double c = 1.0 / (2.0 * double(N));
  auto softmax_rows = [&](std::vector<double>& S, std::vector<double>& D, bool image_rows) {
    double total = 0;
    for (int64_t q = 0; q < rows; ++q) {
      const int64_t own = row0 + q;
      double* s = S.data() + q * N;
      for (int64_t k = 0; k < N; ++k) s[k] = image_rows ? dot(own, k) : dot(k, own);
      double mx = -INFINITY;
      for (int64_t k = 0; k < N; ++k) mx = std::max(mx, s[k]);
      double sum = 0;
      for (int64_t k = 0; k < N; ++k) sum += std::exp(s[k] - mx);
      total += mx + std::log(sum) - s[own];
      for (int64_t k = 0; k < N; ++k) D[size_t(q * N + k)] = c * (std::exp(s[k] - mx) / sum - (k == own ? 1.0 : 0.0));
    }
    return total / double(rows);
  };
  r.loss_image_to_text = softmax_rows(SA, A, true);
  r.loss_text_to_image = softmax_rows(SB, B, false);
  r.loss = 0.5 * (r.loss_image_to_text + r.loss_text_to_image);
  double dt = 0;
  for (size_t k = 0; k < RN; ++k) dt += A[k] * SA[k] + B[k] * SB[k];
  if (d_logit_scale) *d_logit_scale = T(dt);
  // Through the cosine matrix: dI_i = scale (sum_j dS_ij T_j), dT_j = scale (sum_i dS_ij I_i),
  // where dS is A on the share's rows and B on its columns; then the normalisations.
  std::vector<double> dI(NE, 0.0), dT(NE, 0.0);
  for (int64_t q = 0; q < rows; ++q) {
    const int64_t own = row0 + q;
    for (int64_t k = 0; k < N; ++k) {
      const double a = scale * A[size_t(q * N + k)], b = scale * B[size_t(q * N + k)];
      for (int64_t e = 0; e < E; ++e) {
        dI[own * E + e] += a * Tn[k * E + e];  // row `own`, column k
        dT[k * E + e] += a * I[own * E + e];
        dI[k * E + e] += b * Tn[own * E + e];  // row k, column `own`
        dT[own * E + e] += b * I[k * E + e];
      }
    }
  }
  auto back = [&](const std::vector<double>& Y, const std::vector<double>& dY, const std::vector<double>& norm, T* dx) {
    if (!dx) return;
    for (int64_t i = 0; i < N; ++i) {
      double d = 0;
      for (int64_t e = 0; e < E; ++e) d += Y[i * E + e] * dY[i * E + e];
      for (int64_t e = 0; e < E; ++e) dx[i * E + e] = T((dY[i * E + e] - Y[i * E + e] * d) / norm[i]);
    }
  };
  back(I, dI, in, d_image);
  back(Tn, dT, tn, d_text);
  return r;
}

template <typename T>
SiglipLossResult<T> siglip_loss_rows(const T* image_features, const T* text_features, int64_t N, int64_t E,
                                     T logit_scale, T logit_bias, int64_t row0, int64_t rows, T* d_image, T* d_text,
                                     T* d_logit_scale, T* d_logit_bias) {
  if (N <= 0 || E <= 0) throw Error("siglip_loss: empty batch or feature size");
  if (row0 < 0 || rows <= 0 || row0 + rows > N)
    throw Error("siglip_loss: rows " + std::to_string(row0) + ".." + std::to_string(row0 + rows) +
                " outside a batch of " + std::to_string(N));
  const size_t NE = size_t(N * E);
  std::vector<double> I(NE), Tn(NE), in(static_cast<size_t>(N)), tn(static_cast<size_t>(N));
  auto normalise = [&](const T* x, std::vector<double>& y, std::vector<double>& norm) {
    for (int64_t i = 0; i < N; ++i) {
      double q = 0;
      for (int64_t e = 0; e < E; ++e) q += double(x[i * E + e]) * double(x[i * E + e]);
      norm[i] = std::sqrt(q);
      if (!(norm[i] > 0)) throw Error("siglip_loss: a feature vector has zero (or non-finite) norm");
      for (int64_t e = 0; e < E; ++e) y[i * E + e] = double(x[i * E + e]) / norm[i];
    }
  };
  normalise(image_features, I, in);
  normalise(text_features, Tn, tn);
  const double scale = std::exp(double(logit_scale)), bias = double(logit_bias);
  std::vector<double> dI(NE, 0.0), dT(NE, 0.0);
  double total = 0, dt = 0, db = 0;
  const double inv_n = 1.0 / double(N);
  for (int64_t q = 0; q < rows; ++q) {
    const int64_t i = row0 + q;
    for (int64_t j = 0; j < N; ++j) {
      double c = 0;
      for (int64_t e = 0; e < E; ++e) c += I[i * E + e] * Tn[j * E + e];
      const double z = i == j ? 1.0 : -1.0, x = z * (scale * c + bias);
      // -log sigmoid(x) = softplus(-x), stably; its derivative in x is -sigmoid(-x).
      total += std::max(-x, 0.0) + std::log1p(std::exp(-std::abs(x)));
      const double sig_neg = x >= 0 ? std::exp(-x) / (1.0 + std::exp(-x)) : 1.0 / (1.0 + std::exp(x));
      const double du = -z * sig_neg * inv_n;  // d(share loss)/d(scale c + bias)
      db += du;
      dt += du * scale * c;
      const double dc = du * scale;
      for (int64_t e = 0; e < E; ++e) {
        dI[i * E + e] += dc * Tn[j * E + e];
        dT[j * E + e] += dc * I[i * E + e];
      }
    }
  }
  if (d_logit_scale) *d_logit_scale = T(dt);
  if (d_logit_bias) *d_logit_bias = T(db);
  auto back = [&](const std::vector<double>& Y, const std::vector<double>& dY, const std::vector<double>& norm, T* dx) {
    if (!dx) return;
    for (int64_t i = 0; i < N; ++i) {
      double d = 0;
      for (int64_t e = 0; e < E; ++e) d += Y[i * E + e] * dY[i * E + e];
      for (int64_t e = 0; e < E; ++e) dx[i * E + e] = T((dY[i * E + e] - Y[i * E + e] * d) / norm[i]);
    }
  };
  back(I, dI, in, d_image);
  back(Tn, dT, tn, d_text);
  SiglipLossResult<T> r;
  r.loss = total / double(rows);
  return r;
}

template SiglipLossResult<float> siglip_loss_rows<float>(const float*, const float*, int64_t, int64_t, float, float,
                                                         int64_t, int64_t, float*, float*, float*, float*);
template SiglipLossResult<double> siglip_loss_rows<double>(const double*, const double*, int64_t, int64_t, double,
                                                           double, int64_t, int64_t, double*, double*, double*,
                                                           double*);

template ClipLossResult<float> clip_loss_rows<float>(const float*, const float*, int64_t, int64_t, float, int64_t,
                                                     int64_t, float*, float*, float*);
template ClipLossResult<double> clip_loss_rows<double>(const double*, const double*, int64_t, int64_t, double,
                                                       int64_t, int64_t, double*, double*, double*);
template ClipLossResult<float> clip_loss<float>(const float*, const float*, int64_t, int64_t,
                                                float, float*, float*, float*, bool);
template ClipLossResult<double> clip_loss<double>(const double*, const double*, int64_t,
                                                  int64_t, double, double*, double*, double*,
                                                  bool);

}  // namespace clip::train
