#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/matmul.h"
#include "core/error.h"

namespace clip::train {

namespace {
// x / ||x|| per row, in double, with the norms.
template <typename T>
void normalise_rows(const T* x, int64_t n, int64_t E, std::vector<double>& y, std::vector<double>& norm, const char* what) {
  y.resize(size_t(n * E));
  norm.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    double q = 0;
    for (int64_t e = 0; e < E; ++e) q += double(x[i * E + e]) * double(x[i * E + e]);
    norm[size_t(i)] = std::sqrt(q);
    if (!(norm[size_t(i)] > 0)) throw Error(std::string(what) + ": a feature vector has zero (or non-finite) norm");
    for (int64_t e = 0; e < E; ++e) y[size_t(i * E + e)] = double(x[i * E + e]) / norm[size_t(i)];
  }
}
// dx += (dy - y <y, dy>) / ||x|| per row: the normalisation's backward (linear in dy).
template <typename T>
void normalise_rows_backward(const std::vector<double>& y, const std::vector<double>& dy, const std::vector<double>& norm,
                             int64_t n, int64_t E, T* dx) {
  for (int64_t i = 0; i < n; ++i) {
    double d = 0;
    for (int64_t e = 0; e < E; ++e) d += y[size_t(i * E + e)] * dy[size_t(i * E + e)];
    for (int64_t e = 0; e < E; ++e)
      dx[i * E + e] += T((dy[size_t(i * E + e)] - y[size_t(i * E + e)] * d) / norm[size_t(i)]);
  }
}
}  // namespace

template <typename T>
ClipLossResult<T> clip_loss(const T* image_features, const T* text_features, int64_t N,
                            int64_t E, T logit_scale, T* d_image, T* d_text, T* d_logit_scale) {
  if (N <= 0 || E <= 0) throw Error("clip_loss: empty batch or feature size");
  // The whole batch is the one share of a partition of one.
  return clip_loss_rows<T>(image_features, text_features, N, E, logit_scale, 0, N, d_image, d_text, d_logit_scale);
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
  std::vector<double> I, Tn, in, tn;
  normalise_rows(image_features, N, E, I, in, "clip_loss");
  normalise_rows(text_features, N, E, Tn, tn, "clip_loss");
  const double scale = std::exp(double(logit_scale));
  // SA[q, k] = S[row0 + q, k] (the share's image rows), SB[q, k] = S[k, row0 + q] (its text
  // columns), as products: O(rows N) memory, BLAS speed.
  const size_t RN = size_t(rows * N);
  std::vector<double> SA(RN), SB(RN), A(RN), B(RN);
  const double* IR = I.data() + row0 * E;
  const double* TR = Tn.data() + row0 * E;
  dgemm(false, true, rows, N, E, scale, IR, E, Tn.data(), E, 0.0, SA.data(), N);
  dgemm(false, true, rows, N, E, scale, TR, E, I.data(), E, 0.0, SB.data(), N);
  // A = dL/dS on those rows, B on those columns (c = 1 / 2N: the whole batch's normalisation).
  ClipLossResult<T> r;
  const double c = 1.0 / (2.0 * double(N));
  auto softmax_rows = [&](const std::vector<double>& S, std::vector<double>& D) {
    double total = 0;
    for (int64_t q = 0; q < rows; ++q) {
      const int64_t own = row0 + q;
      const double* s = S.data() + q * N;
      double mx = -INFINITY;
      for (int64_t k = 0; k < N; ++k) mx = std::max(mx, s[k]);
      double sum = 0;
      for (int64_t k = 0; k < N; ++k) sum += std::exp(s[k] - mx);
      total += mx + std::log(sum) - s[own];
      for (int64_t k = 0; k < N; ++k) D[size_t(q * N + k)] = c * (std::exp(s[k] - mx) / sum - (k == own ? 1.0 : 0.0));
    }
    return total / double(rows);
  };
  r.loss_image_to_text = softmax_rows(SA, A);
  r.loss_text_to_image = softmax_rows(SB, B);
  r.loss = 0.5 * (r.loss_image_to_text + r.loss_text_to_image);
  double dt = 0;
  for (size_t k = 0; k < RN; ++k) dt += A[k] * SA[k] + B[k] * SB[k];
  if (d_logit_scale) *d_logit_scale = T(dt);
  // Through the cosine matrix: dI = scale (dS T), dT = scale (dS^T I), with dS = A on the
  // share's rows and B on its columns.
  std::vector<double> dI(NE, 0.0), dT(NE, 0.0);
  dgemm(false, false, rows, E, N, scale, A.data(), N, Tn.data(), E, 1.0, dI.data() + row0 * E, E);
  dgemm(true, false, N, E, rows, scale, B.data(), N, TR, E, 1.0, dI.data(), E);
  dgemm(true, false, N, E, rows, scale, A.data(), N, IR, E, 1.0, dT.data(), E);
  dgemm(false, false, rows, E, N, scale, B.data(), N, I.data(), E, 1.0, dT.data() + row0 * E, E);
  if (d_image) {
    std::fill(d_image, d_image + NE, T(0));
    normalise_rows_backward(I, dI, in, N, E, d_image);
  }
  if (d_text) {
    std::fill(d_text, d_text + NE, T(0));
    normalise_rows_backward(Tn, dT, tn, N, E, d_text);
  }
  return r;
}


template <typename T>
double siglip_loss_block(const T* image, int64_t rows, const T* text, int64_t cols, int64_t E, T logit_scale,
                         T logit_bias, int64_t positive_offset, int64_t N, T* d_image, T* d_text,
                         double* d_logit_scale, double* d_logit_bias) {
  if (rows <= 0 || cols <= 0 || E <= 0 || N <= 0) throw Error("siglip_loss: empty block or feature size");
  std::vector<double> I, Tn, in, tn;
  normalise_rows(image, rows, E, I, in, "siglip_loss");
  normalise_rows(text, cols, E, Tn, tn, "siglip_loss");
  const double scale = std::exp(double(logit_scale)), bias = double(logit_bias), inv_n = 1.0 / double(N);
  // C[q, j] = <I_q, T_j>; G[q, j] = d(loss)/dC (one product each way).
  const size_t RC = size_t(rows * cols);
  std::vector<double> C(RC), G(RC);
  dgemm(false, true, rows, cols, E, 1.0, I.data(), E, Tn.data(), E, 0.0, C.data(), cols);
  double total = 0, dt = 0, db = 0;
  for (int64_t q = 0; q < rows; ++q)
    for (int64_t j = 0; j < cols; ++j) {
      const double cij = C[size_t(q * cols + j)];
      const double z = j == q + positive_offset ? 1.0 : -1.0, x = z * (scale * cij + bias);
      // -log sigmoid(x) = softplus(-x), stably; its derivative in x is -sigmoid(-x).
      total += std::max(-x, 0.0) + std::log1p(std::exp(-std::abs(x)));
      const double sig_neg = x >= 0 ? std::exp(-x) / (1.0 + std::exp(-x)) : 1.0 / (1.0 + std::exp(x));
      const double du = -z * sig_neg * inv_n;  // d(loss)/d(scale c + bias)
      db += du;
      dt += du * scale * cij;
      G[size_t(q * cols + j)] = du * scale;
    }
  if (d_logit_scale) *d_logit_scale += dt;
  if (d_logit_bias) *d_logit_bias += db;
  if (d_image) {
    std::vector<double> dI(size_t(rows * E));
    dgemm(false, false, rows, E, cols, 1.0, G.data(), cols, Tn.data(), E, 0.0, dI.data(), E);
    normalise_rows_backward(I, dI, in, rows, E, d_image);
  }
  if (d_text) {
    std::vector<double> dT(size_t(cols * E));
    dgemm(true, false, cols, E, rows, 1.0, G.data(), cols, I.data(), E, 0.0, dT.data(), E);
    normalise_rows_backward(Tn, dT, tn, cols, E, d_text);
  }
  return total;
}

template <typename T>
SiglipLossResult<T> siglip_loss_rows(const T* image_features, const T* text_features, int64_t N, int64_t E,
                                     T logit_scale, T logit_bias, int64_t row0, int64_t rows, T* d_image, T* d_text,
                                     T* d_logit_scale, T* d_logit_bias) {
  if (N <= 0 || E <= 0) throw Error("siglip_loss: empty batch or feature size");
  if (row0 < 0 || rows <= 0 || row0 + rows > N)
    throw Error("siglip_loss: rows " + std::to_string(row0) + ".." + std::to_string(row0 + rows) +
                " outside a batch of " + std::to_string(N));
  if (d_image) std::fill(d_image, d_image + N * E, T(0));
  if (d_text) std::fill(d_text, d_text + N * E, T(0));
  double dt = 0, db = 0;
  const double total = siglip_loss_block<T>(image_features + row0 * E, rows, text_features, N, E, logit_scale, logit_bias,
                                            row0, N, d_image ? d_image + row0 * E : nullptr, d_text, &dt, &db);
  if (d_logit_scale) *d_logit_scale = T(dt);
  if (d_logit_bias) *d_logit_bias = T(db);
  SiglipLossResult<T> r;
  r.loss = total / double(rows);
  return r;
}

template double siglip_loss_block<float>(const float*, int64_t, const float*, int64_t, int64_t, float, float, int64_t,
                                         int64_t, float*, float*, double*, double*);
template double siglip_loss_block<double>(const double*, int64_t, const double*, int64_t, int64_t, double, double,
                                          int64_t, int64_t, double*, double*, double*, double*);
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
                                                float, float*, float*, float*);
template ClipLossResult<double> clip_loss<double>(const double*, const double*, int64_t,
                                                  int64_t, double, double*, double*, double*);

}  // namespace clip::train
