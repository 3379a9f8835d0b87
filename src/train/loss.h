#pragma once
// The contrastive loss exactly as the CLIP paper's pseudocode (Figure 3):
//   I_e = l2_normalize(I_f), T_e = l2_normalize(T_f)          (x / ||x||, no epsilon)
//   logits = exp(t) * I_e @ T_e^T                              [N, N]
//   loss = (CE(logits, labels, axis=0) + CE(logits, labels, axis=1)) / 2,  labels = arange(N)
// with each cross-entropy the mean over the N rows (columns). The whole loss is computed in
// double (it is N x N and cheap), whatever the feature type.
#include <cstdint>

namespace clip::train {

template <typename T>
struct ClipLossResult {
  double loss = 0;
  double loss_image_to_text = 0;  // CE over the rows of logits_per_image
  double loss_text_to_image = 0;  // CE over its columns
};

// Forward and backward at once. image_features, text_features: [N, E] (unnormalised).
// d_image, d_text ([N, E]) and d_logit_scale receive dloss/d(input) (+= when accumulate is
// true, else overwritten); each may be null.
template <typename T>
ClipLossResult<T> clip_loss(const T* image_features, const T* text_features, int64_t N,
                            int64_t E, T logit_scale, T* d_image, T* d_text, T* d_logit_scale,
                            bool accumulate = false);

}  // namespace clip::train
