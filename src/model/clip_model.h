#pragma once
// A whole CLIP model for inference: image tower (VisionTransformer or ModifiedResNet), text
// tower and logit scale, built from a loaded checkpoint (canonical OpenAI names, F32). The
// towers are the one network definition (nn/clip_network.h, nn/resnet_tower.h) training uses,
// prepared for inference (a ModifiedResNet image tower through model/resnet.h's loader).
#include <cstdint>
#include <memory>

#include "model/config.h"
#include "model/weights.h"
#include "nn/clip_network.h"

namespace clip {

class ResNetVisual;

class ClipModel {
 public:
  // Takes the checkpoint and keeps it (its tensors back the weights). Throws clip::Error
  // naming the file and the tensor when a weight is missing or has the wrong shape.
  // `precision`: how the transformer blocks' linear layers and (int8, int4) a ResNet tower's
  // convolutions run (backend/matmul.h; BF16 needs bf16_available(), INT8 int8_available());
  // attention, the ResNet attention pool, LayerNorm and the projections stay f32.
  explicit ClipModel(LoadedCheckpoint ckpt, Precision precision = Precision::F32);
  Precision precision() const { return precision_; }
  ~ClipModel();
  ClipModel(ClipModel&&) noexcept;
  ClipModel& operator=(ClipModel&&) noexcept;

  const ModelConfig& config() const { return ckpt_.config; }
  const LoadedCheckpoint& checkpoint() const { return ckpt_; }
  int embed_dim() const { return ckpt_.config.embed_dim; }
  int image_size() const { return ckpt_.config.vision.image_size; }
  int context_length() const { return ckpt_.config.text.context_length; }

  // pixels_nchw: [batch, 3, image_size, image_size], normalised; out: [batch, embed_dim].
  // Features are NOT normalised (callers use l2_normalize_rows from core/ops.h).
  // hook (ViT only) receives intermediate activations, see nn::ClipNetwork::encode_images.
  void encode_images(const float* pixels_nchw, int batch, float* out,
                     const ActivationHook* hook = nullptr);
  // ids: [batch, context] token ids (context <= context_length(), zero padded, each row with
  // an end-of-text token as its largest id); out: [batch, embed_dim], not normalised.
  void encode_texts(const int32_t* ids, int batch, int context, float* out,
                    const ActivationHook* hook = nullptr);

  // The stored parameter (ln of the temperature) and exp() of it: logits are
  // logit_scale_exp() * normalised(image) . normalised(text).
  float logit_scale() const { return logit_scale_; }
  float logit_scale_exp() const;

  // logits[i, j] = logit_scale_exp() * cos(image_i, text_j): openai/CLIP's logits_per_image
  // ([n_images, n_texts]; its transpose is logits_per_text). Takes unnormalised features as
  // the encoders return them.
  void logits_per_image(const float* image_features, int n_images, const float* text_features,
                        int n_texts, float* logits) const;

 private:
  LoadedCheckpoint ckpt_;
  std::unique_ptr<nn::ClipNetwork<float>> net_;  // text tower, and the image tower unless ResNet
  std::unique_ptr<ResNetVisual> resnet_;
  float logit_scale_ = 0.f;
  Precision precision_ = Precision::F32;
};

}  // namespace clip
