#pragma once
// The stack of pre-LN residual attention blocks shared by the image and text towers
// (openai/CLIP model.py `Transformer`):
//   x = x + out_proj(MHA(ln_1(x)));  x = x + c_proj(act(c_fc(ln_2(x))))
// Weights are views into the checkpoint (canonical OpenAI names and layouts, F32).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace clip {

// Called with an activation (a temporary buffer) after each stage, for parity tests.
using ActivationHook = std::function<void(const std::string& name, const float* data,
                                          const std::vector<int64_t>& shape)>;

struct ResidualBlockWeights {
  const float* ln_1_weight; const float* ln_1_bias;
  const float* in_proj_weight;   // [3d, d], rows q; k; v
  const float* in_proj_bias;     // [3d]
  const float* out_proj_weight;  // [d, d]
  const float* out_proj_bias;    // [d]
  const float* ln_2_weight; const float* ln_2_bias;
  const float* c_fc_weight;      // [mlp, d]
  const float* c_fc_bias;        // [mlp]
  const float* c_proj_weight;    // [d, mlp]
  const float* c_proj_bias;      // [d]
};

// Scratch for one forward pass, sized for (batch, seq) and reused while they fit.
struct TransformerWorkspace {
  std::vector<float> ln, qkv, attn, mlp;
  void reserve(int64_t rows, int64_t width, int64_t mlp_dim);
};

class Transformer {
 public:
  Transformer() = default;
  // Reads `<prefix>resblocks.<i>.*` for i < layers, checking every shape.
  Transformer(const LoadedCheckpoint& ckpt, const std::string& prefix, int width, int layers,
              int heads, int mlp_dim, Activation activation, float eps);

  // x[B, T, width] in place. Hook names: `<hook_prefix>block.<i>` after each block.
  void forward(float* x, int64_t B, int64_t T, bool causal, TransformerWorkspace& ws,
               const ActivationHook* hook = nullptr, const std::string& hook_prefix = "") const;

  int width() const { return width_; }
  int layers() const { return int(blocks_.size()); }

 private:
  int width_ = 0, heads_ = 0, mlp_dim_ = 0;
  Activation activation_ = Activation::QuickGELU;
  float eps_ = 1e-5f;
  std::vector<ResidualBlockWeights> blocks_;
};

}  // namespace clip
