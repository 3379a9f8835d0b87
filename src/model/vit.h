#pragma once
// OpenAI's VisionTransformer image tower (model.py): patch embedding (a convolution with
// kernel = stride = patch, no bias), class token, positional embedding, ln_pre, pre-LN
// residual blocks, ln_post on the class token, projection. Any width/depth/heads/patch/size
// (ViT-B/32, B/16, L/14, L/14@336, ...).
#include <cstdint>

#include "model/transformer.h"

namespace clip {

class VisionTransformer {
 public:
  // Reads the visual.* tensors of `ckpt` (canonical names, F32 views; ckpt must outlive this)
  // using the dimensions in ckpt.config.vision, checking every shape.
  explicit VisionTransformer(const LoadedCheckpoint& ckpt, Precision precision = Precision::F32);

  // pixels_nchw: [batch, 3, image_size, image_size] (normalised); out: [batch, embed_dim],
  // not normalised. Not safe to call concurrently on one object (it reuses its scratch).
  // Hook names: vision.embed [B,T,w] (class token + patches + positions), vision.ln_pre,
  // vision.block.<i> [B,T,w], vision.ln_post [B,w], vision.output [B,embed].
  void encode(const float* pixels_nchw, int batch, float* out,
              const ActivationHook* hook = nullptr);

  int image_size() const { return image_size_; }
  int embed_dim() const { return embed_dim_; }
  int tokens() const { return tokens_; }  // grid^2 + 1

 private:
  int image_size_ = 0, patch_ = 0, grid_ = 0, tokens_ = 0, width_ = 0, embed_dim_ = 0;
  float eps_ = 1e-5f;
  const float* conv1_weight_ = nullptr;         // [width, 3, patch, patch]
  const float* class_embedding_ = nullptr;      // [width]
  const float* positional_embedding_ = nullptr; // [tokens, width]
  const float* ln_pre_weight_ = nullptr; const float* ln_pre_bias_ = nullptr;
  const float* ln_post_weight_ = nullptr; const float* ln_post_bias_ = nullptr;
  const float* proj_ = nullptr;                 // [width, embed]
  Transformer transformer_;
  TransformerWorkspace ws_;
  std::vector<float> patches_, embedded_, x_, pooled_;
  std::vector<int64_t> class_token_rows_;  // [B] zeros: the pooled position of each image
};

}  // namespace clip
