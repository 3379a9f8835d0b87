#pragma once
// The stack of pre-LN residual attention blocks shared by the image and text towers
// (openai/CLIP model.py `Transformer`):
//   x = x + out_proj(MHA(ln_1(x)));  x = x + c_proj(act(c_fc(ln_2(x))))
// Weights are views into the checkpoint (canonical OpenAI names and layouts, F32).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/matmul.h"
#include "model/config.h"
#include "model/weights.h"

namespace clip {

// Called with an activation (a temporary buffer) after each stage, for parity tests.
using ActivationHook = std::function<void(const std::string& name, const float* data,
                                          const std::vector<int64_t>& shape)>;

// The products' weights are packed (core/matmul.h); in_proj is packed as its q rows and its
// k | v rows, so a pooled last block can project k, v for all rows and q for a few.
struct ResidualBlockWeights {
  const float* ln_1_weight; const float* ln_1_bias;
  PackedWeight in_proj_q;        // in_proj_weight rows [0, d): [d, d]
  PackedWeight in_proj_kv;       // in_proj_weight rows [d, 3d): [2d, d]
  const float* in_proj_bias;     // [3d]
  PackedWeight out_proj;         // [d, d]
  const float* out_proj_bias;    // [d]
  const float* ln_2_weight; const float* ln_2_bias;
  PackedWeight c_fc;             // [mlp, d]
  const float* c_fc_bias;        // [mlp]
  PackedWeight c_proj;           // [d, mlp]
  const float* c_proj_bias;      // [d]
};

// Scratch for one forward pass, sized for (batch, seq) and reused while they fit.
struct TransformerWorkspace {
  std::vector<float> ln, qkv, attn, mlp;
  std::vector<float> pooled_ln, pooled_q, pooled_attn;  // [B, width]: the pooled last block
  void reserve(int64_t rows, int64_t width, int64_t mlp_dim, int64_t pooled_rows = 0);
};

// The rows that leave the tower: row positions[b] of each sequence b (the class token of an
// image, the end-of-text token of a text). out[B, width] receives their final residual stream.
struct PooledRows {
  const int64_t* positions;  // [B], each in [0, T)
  float* out;                // [B, width]
};

class Transformer {
 public:
  Transformer() = default;
  // Reads `<prefix>resblocks.<i>.*` for i < layers, checking every shape.
  // `precision`: how the blocks' linear layers are prepared (core/matmul.h PackedWeight).
  Transformer(const LoadedCheckpoint& ckpt, const std::string& prefix, int width, int layers,
              int heads, int mlp_dim, Activation activation, float eps, Precision precision = Precision::F32);

  // x[B, T, width] in place. Hook names: `<hook_prefix>block.<i>` after each block.
  // With `pooled`, only the pooled rows are wanted: rows mix only through attention's keys and
  // values, so the last block computes ln_1 and k, v for all rows but q, attention, out_proj
  // and the MLP for the pooled rows only, writing them to pooled->out; x is then left holding
  // the last block's input. With a hook set the last block still runs on all rows (x is then
  // the full output, as without `pooled`) so every block's activations can be compared.
  void forward(float* x, int64_t B, int64_t T, bool causal, TransformerWorkspace& ws,
               const ActivationHook* hook = nullptr, const std::string& hook_prefix = "",
               const PooledRows* pooled = nullptr) const;

  int width() const { return width_; }
  int layers() const { return int(blocks_.size()); }

 private:
  void block_forward(const ResidualBlockWeights& w, float* x, int64_t B, int64_t T, bool causal,
                     TransformerWorkspace& ws) const;
  void pooled_block_forward(const ResidualBlockWeights& w, const float* x, int64_t B, int64_t T,
                            bool causal, const PooledRows& pooled, TransformerWorkspace& ws) const;

  int width_ = 0, heads_ = 0, mlp_dim_ = 0;
  Activation activation_ = Activation::QuickGELU;
  float eps_ = 1e-5f;
  std::vector<ResidualBlockWeights> blocks_;
};

}  // namespace clip
