#pragma once
// OpenAI's ModifiedResNet image encoder (RN50, RN101, RN50x4, x16, x64): a three-convolution
// stem, four stages of anti-aliased bottleneck blocks and an attention-pooling head.
// This is the loader: it reads the architecture from the tensor shapes (checked against the
// config), checks every tensor, and prepares the one tower definition training also uses
// (nn/resnet_tower.h: batch norm folded into the backend's convolutions) to encode.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/matmul.h"
#include "model/config.h"
#include "model/weights.h"

namespace clip {

namespace resnet_detail { struct Weights; }

class ResNetVisual {
 public:
  // Reads the visual.* tensors of `ckpt` (canonical OpenAI names, F32). The architecture is
  // taken from ckpt.config.vision when it names a ResNet and checked against the tensor
  // shapes; otherwise it is inferred from the shapes (as openai/CLIP's build_model does).
  // Throws clip::Error naming the tensor when one is missing or has the wrong shape.
  // `precision`: how the convolutions' products run (backend/matmul.h; the attention pool stays f32).
  explicit ResNetVisual(const LoadedCheckpoint& ckpt, Precision precision = Precision::F32);
  ~ResNetVisual();
  ResNetVisual(ResNetVisual&&) noexcept;
  ResNetVisual& operator=(ResNetVisual&&) noexcept;

  // pixels_nchw: [batch, 3, image_size, image_size] (normalised pixels);
  // features_out: [batch, embed_dim], not normalised.
  void encode(const float* pixels_nchw, int batch, float* features_out) const;

  // Called after each stage with the activation in NCHW order (a temporary buffer):
  //   "stem"   [B, width, S/4, S/4]          (after the stem's 2x2 average pool)
  //   "layer1" [B, 4*width, S/4, S/4] ... "layer4" [B, 32*width, S/32, S/32]
  //   "attnpool" [B, embed_dim]              (the output; same as features_out)
  using StageHook = std::function<void(const std::string& stage, const float* data,
                                       const std::vector<int64_t>& shape)>;
  void encode(const float* pixels_nchw, int batch, float* features_out, const StageHook& hook) const;

  const VisionConfig& config() const { return config_; }
  int embed_dim() const { return embed_dim_; }
  int image_size() const { return config_.image_size; }

  // Per-stage wall time (seconds) of the last encode() call, for the benchmarks:
  // stem, layer1..layer4, attnpool. (encode() may run on several threads at once; the times
  // are then those of whichever call finished last.)
  struct StageTimes { double stem = 0, layer[4] = {0, 0, 0, 0}, attnpool = 0; };
  StageTimes last_stage_times() const;

 private:
  VisionConfig config_;
  int embed_dim_ = 0;
  std::unique_ptr<resnet_detail::Weights> weights_;  // also holds the last stage times
};

}  // namespace clip
