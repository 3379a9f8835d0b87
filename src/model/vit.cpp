#include "model/vit.h"

#include <algorithm>
#include <cstring>

#include "core/matmul.h"
#include "core/ops.h"

namespace clip {

VisionTransformer::VisionTransformer(const LoadedCheckpoint& ckpt, Precision precision) {
  const VisionConfig& vc = ckpt.config.vision;
  if (vc.is_resnet())
    throw Error(ckpt.weights_path + ": the image tower is a ResNet, not a VisionTransformer");
  if (vc.patch_size <= 0 || vc.image_size <= 0 || vc.image_size % vc.patch_size != 0)
    throw Error(ckpt.weights_path + ": image size " + std::to_string(vc.image_size) +
                " is not a multiple of the patch size " + std::to_string(vc.patch_size));
  image_size_ = vc.image_size;
  patch_ = vc.patch_size;
  grid_ = image_size_ / patch_;
  tokens_ = grid_ * grid_ + 1;
  width_ = vc.width;
  embed_dim_ = ckpt.config.embed_dim;
  eps_ = ckpt.config.layer_norm_eps;
  const int64_t w = width_;
  conv1_weight_ = ckpt.get("visual.conv1.weight", {w, 3, patch_, patch_}).f32();
  class_embedding_ = ckpt.get("visual.class_embedding", {w}).f32();
  positional_embedding_ = ckpt.get("visual.positional_embedding", {tokens_, w}).f32();
  ln_pre_weight_ = ckpt.get("visual.ln_pre.weight", {w}).f32();
  ln_pre_bias_ = ckpt.get("visual.ln_pre.bias", {w}).f32();
  ln_post_weight_ = ckpt.get("visual.ln_post.weight", {w}).f32();
  ln_post_bias_ = ckpt.get("visual.ln_post.bias", {w}).f32();
  proj_ = ckpt.get("visual.proj", {w, embed_dim_}).f32();
  transformer_ = Transformer(ckpt, "visual.transformer.", width_, vc.layers, vc.heads,
                             vc.mlp_dim, ckpt.config.activation, eps_, precision);
}

void VisionTransformer::encode(const float* pixels, int batch, float* out,
                               const ActivationHook* hook) {
  if (batch <= 0) return;
  const int64_t B = batch, T = tokens_, w = width_, G2 = int64_t(grid_) * grid_;
  const int64_t patch_len = 3 * int64_t(patch_) * patch_;
  auto fit = [](std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
  };
  fit(patches_, B * G2 * patch_len);
  fit(embedded_, B * G2 * w);
  fit(x_, B * T * w);
  fit(pooled_, B * w);
  float* x = x_.data();
  auto emit = [&](const std::string& name, const float* data, std::vector<int64_t> shape) {
    if (hook && *hook) (*hook)(name, data, shape);
  };

  // Patch embedding: unfold the patches, then one product with conv1 viewed as [w, 3*P*P].
  im2col_patches(patches_.data(), pixels, B, 3, image_size_, patch_);
  float* embedded = embedded_.data();
  sgemm(false, true, B * G2, w, patch_len, 1.f, patches_.data(), patch_len, conv1_weight_,
        patch_len, 0.f, embedded, w);
  // [class token; patches] + positions.
  for (int64_t b = 0; b < B; ++b) {
    float* xb = x + b * T * w;
    for (int64_t c = 0; c < w; ++c) xb[c] = class_embedding_[c] + positional_embedding_[c];
    for (int64_t t = 1; t < T; ++t) {
      const float* e = embedded + (b * G2 + t - 1) * w;
      const float* p = positional_embedding_ + t * w;
      float* r = xb + t * w;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) r[c] = e[c] + p[c];
    }
  }
  emit("vision.embed", x, {B, T, w});
  layernorm_forward(x, nullptr, nullptr, x, ln_pre_weight_, ln_pre_bias_, B * T, w, eps_);
  emit("vision.ln_pre", x, {B, T, w});
  // Only the class token (row 0 of each image) leaves the tower.
  class_token_rows_.assign(size_t(B), 0);
  float* pooled = pooled_.data();
  const PooledRows class_tokens{class_token_rows_.data(), pooled};
  transformer_.forward(x, B, T, /*causal=*/false, ws_, hook, "vision.", &class_tokens);
  // ln_post on the class token of each image, then the projection.
  layernorm_forward(pooled, nullptr, nullptr, pooled, ln_post_weight_, ln_post_bias_, B, w, eps_);
  emit("vision.ln_post", pooled, {B, w});
  sgemm(false, false, B, embed_dim_, w, 1.f, pooled, w, proj_, embed_dim_, 0.f, out,
        embed_dim_);
  emit("vision.output", out, {B, int64_t(embed_dim_)});
}

}  // namespace clip
