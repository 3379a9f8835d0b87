#pragma once
// The contrastive loss exactly as the CLIP paper's pseudocode (Figure 3):
//   I_e = l2_normalize(I_f), T_e = l2_normalize(T_f)          (x / ||x||, no epsilon)
//   logits = exp(t) * I_e @ T_e^T                              [N, N]
//   loss = (CE(logits, labels, axis=0) + CE(logits, labels, axis=1)) / 2,  labels = arange(N)
// with each cross-entropy the mean over the N rows (columns). Computed in double, whatever the
// feature type, with BLAS products for the N x N similarities and their gradients (it is
// clip_loss_rows with one share of all N rows).
#include <cstdint>

namespace clip::train {

template <typename T>
struct ClipLossResult {
  double loss = 0;
  double loss_image_to_text = 0;  // CE over the rows of logits_per_image
  double loss_text_to_image = 0;  // CE over its columns
  double comm_seconds = 0;        // data parallel: time spent in collectives (grad_accum.h)
};

// Forward and backward at once. image_features, text_features: [N, E] (unnormalised).
// d_image, d_text ([N, E]) and d_logit_scale receive dloss/d(input) (overwritten); each may
// be null.
template <typename T>
ClipLossResult<T> clip_loss(const T* image_features, const T* text_features, int64_t N,
                            int64_t E, T logit_scale, T* d_image, T* d_text, T* d_logit_scale);

// The share of the loss that rows [row0, row0 + rows) of an N-row batch own, for data-parallel
// training with local loss (open_clip's ClipLoss(local_loss=True) after gather-with-grad): the
// cross-entropy of those image rows against all N texts and of those text rows against all N
// images, O(rows * N) memory. The result's losses are that share's means over its rows (the
// batch loss is their mean over the shares); d_image, d_text ([N, E], every row: other shares'
// features get gradient too) and d_logit_scale receive the gradient of (rows / N) x that loss,
// so that summing them over the shares of a partition gives clip_loss's gradient.
template <typename T>
ClipLossResult<T> clip_loss_rows(const T* image_features, const T* text_features, int64_t N, int64_t E,
                                 T logit_scale, int64_t row0, int64_t rows, T* d_image, T* d_text,
                                 T* d_logit_scale);

// SigLIP's pairwise sigmoid loss (Zhai et al. 2023; open_clip SigLipLoss), for image rows
// [row0, row0 + rows) of an N-pair batch against all N texts:
//   L = -(1/N) sum_i sum_j log sigmoid(z_ij (exp(t) <x_i, y_j> + b)),  z_ij = +1 if i == j else -1,
// x, y the L2-normalised features, t the logit scale (init ln 10), b the logit bias (init -10).
// The result's loss is the share's sum over its rows divided by `rows` (the batch loss is the
// mean over a partition's shares); the gradients (every row of d_image and d_text, d_logit_scale,
// d_logit_bias; any may be null) are those of (rows / N) x that, so they sum over the shares to
// the batch loss's. In double. With row0 = 0, rows = N: the whole loss.
template <typename T>
struct SiglipLossResult {
  double loss = 0;
};
// The block of that loss between `rows` images and `cols` texts (image q's positive is text
// q + positive_offset when that is in 0..cols-1, every other pair a negative), each term
// weighted 1/N: returns the sum of the block's -log sigmoid terms, and ADDS the block's
// gradient (of the weighted sum) to d_image [rows, E], d_text [cols, E], *d_logit_scale and
// *d_logit_bias (each may be null). The distributed sigmoid loss passes text blocks around a
// ring of ranks and sums these.
template <typename T>
double siglip_loss_block(const T* image, int64_t rows, const T* text, int64_t cols, int64_t E, T logit_scale,
                         T logit_bias, int64_t positive_offset, int64_t N, T* d_image, T* d_text, double* d_logit_scale,
                         double* d_logit_bias);
template <typename T>
SiglipLossResult<T> siglip_loss_rows(const T* image_features, const T* text_features, int64_t N, int64_t E,
                                     T logit_scale, T logit_bias, int64_t row0, int64_t rows, T* d_image, T* d_text,
                                     T* d_logit_scale, T* d_logit_bias);

}  // namespace clip::train
