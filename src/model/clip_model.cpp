#include "model/clip_model.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "backend/matmul.h"
#include "core/ops.h"

#if __has_include("model/resnet.h")
#include "model/resnet.h"
#define CLIP_HAVE_RESNET_TOWER 1
#endif

namespace clip {

#if !defined(CLIP_HAVE_RESNET_TOWER)
class ResNetVisual {};
#endif

ClipModel::ClipModel(LoadedCheckpoint ckpt, Precision precision) : ckpt_(std::move(ckpt)), precision_(precision) {
  if (ckpt_.config.vision.is_resnet()) {
#if defined(CLIP_HAVE_RESNET_TOWER)
    resnet_ = std::make_unique<ResNetVisual>(ckpt_, precision);
#else
    throw Error(ckpt_.weights_path + ": ResNet towers not yet supported");
#endif
  }
  net_ = std::make_unique<nn::ClipNetwork<float>>(ckpt_, precision);
  logit_scale_ = net_->logit_scale();
  // A GGUF file's stored blocks now live (converted) in the prepared network.
  ckpt_.block_weights.clear();
}

ClipModel::~ClipModel() = default;
ClipModel::ClipModel(ClipModel&&) noexcept = default;
ClipModel& ClipModel::operator=(ClipModel&&) noexcept = default;

float ClipModel::logit_scale_exp() const { return std::exp(logit_scale_); }

void ClipModel::logits_per_image(const float* image_features, int n_images,
                                 const float* text_features, int n_texts, float* logits) const {
  if (n_images <= 0 || n_texts <= 0) return;
  const int64_t E = embed_dim();
  std::vector<float> img(image_features, image_features + int64_t(n_images) * E);
  std::vector<float> txt(text_features, text_features + int64_t(n_texts) * E);
  l2_normalize_rows(img.data(), n_images, E);
  l2_normalize_rows(txt.data(), n_texts, E);
  sgemm(false, true, n_images, n_texts, E, logit_scale_exp(), img.data(), E, txt.data(), E, 0.f,
        logits, n_texts);
}

void ClipModel::encode_images(const float* pixels_nchw, int batch, float* out,
                              const ActivationHook* hook) {
  if (batch < 0) throw Error("encode_images: negative batch size");
  if (!resnet_) {
    net_->encode_images(pixels_nchw, batch, out, hook);
    return;
  }
#if defined(CLIP_HAVE_RESNET_TOWER)
  resnet_->encode(pixels_nchw, batch, out);
#endif
}

void ClipModel::encode_texts(const int32_t* ids, int batch, int context, float* out,
                             const ActivationHook* hook) {
  if (batch < 0) throw Error("encode_texts: negative batch size");
  net_->encode_texts(ids, batch, context, out, hook);
}

}  // namespace clip
