#include "model/transformer.h"

#include <algorithm>

#include "core/matmul.h"
#include "core/ops.h"

namespace clip {

void TransformerWorkspace::reserve(int64_t rows, int64_t width, int64_t mlp_dim,
                                   int64_t pooled_rows) {
  auto fit = [](std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
  };
  fit(ln, rows * width);
  fit(qkv, rows * 3 * width);
  fit(attn, rows * width);
  fit(mlp, rows * mlp_dim);
  fit(pooled_ln, pooled_rows * width);
  fit(pooled_q, pooled_rows * width);
  fit(pooled_attn, pooled_rows * width);
}

Transformer::Transformer(const LoadedCheckpoint& ckpt, const std::string& prefix, int width,
                         int layers, int heads, int mlp_dim, Activation activation, float eps,
                         Precision precision)
    : width_(width), heads_(heads), mlp_dim_(mlp_dim), activation_(activation), eps_(eps) {
  if (width <= 0 || heads <= 0 || width % heads != 0)
    throw Error(ckpt.weights_path + ": transformer " + prefix + " width " +
                std::to_string(width) + " is not divisible into " + std::to_string(heads) +
                " heads");
  const int64_t d = width, m = mlp_dim;
  for (int i = 0; i < layers; ++i) {
    const std::string p = prefix + "resblocks." + std::to_string(i) + ".";
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
      return ckpt.get(p + name, shape).f32();
    };
    // Weights viewed in the mapped file are packed and their pages released below, so the
    // copy costs no memory. Heap copies made at load must stay for the unpacked fallback, so
    // packing them holds them twice: done for an F32 file's few (Hugging Face's q/k/v
    // concatenated into in_proj: +25 % of the text and image towers' in_proj for ViT-B/32),
    // so that every naming scheme computes the same products and gives bit-identical
    // features; not for f16/bf16 files, where every weight is such a copy.
    const bool f32_file = ckpt.stored_dtype == DType::F32;
    auto linear = [&](const float* weight, int64_t rows, int64_t cols) {
      return PackedWeight(weight, rows, cols, f32_file || ckpt.is_mapped(weight, rows * cols), precision);
    };
    ResidualBlockWeights w;
    w.ln_1_weight = get("ln_1.weight", {d});
    w.ln_1_bias = get("ln_1.bias", {d});
    const float* in_proj = get("attn.in_proj_weight", {3 * d, d});
    w.in_proj_q = linear(in_proj, d, d);
    w.in_proj_kv = linear(in_proj + d * d, 2 * d, d);
    w.in_proj_bias = get("attn.in_proj_bias", {3 * d});
    w.out_proj = linear(get("attn.out_proj.weight", {d, d}), d, d);
    w.out_proj_bias = get("attn.out_proj.bias", {d});
    w.ln_2_weight = get("ln_2.weight", {d});
    w.ln_2_bias = get("ln_2.bias", {d});
    w.c_fc = linear(get("mlp.c_fc.weight", {m, d}), m, d);
    w.c_fc_bias = get("mlp.c_fc.bias", {m});
    w.c_proj = linear(get("mlp.c_proj.weight", {d, m}), d, m);
    w.c_proj_bias = get("mlp.c_proj.bias", {d});
    // The packed copies replace the file's pages, released per block so loading never holds
    // both for a whole tower; they are read again only by products run on another thread
    // count (core/matmul.h).
    for (const PackedWeight* pw : {&w.in_proj_q, &w.in_proj_kv, &w.out_proj, &w.c_fc, &w.c_proj})
      if (pw->has_packed_copy() || pw->bf16())
        ckpt.release_pages(pw->weight(), pw->out_features() * pw->in_features());
    blocks_.push_back(w);
  }
}

void Transformer::block_forward(const ResidualBlockWeights& w, float* x, int64_t B, int64_t T,
                                bool causal, TransformerWorkspace& ws) const {
  const int64_t rows = B * T, d = width_, m = mlp_dim_;
  float* ln = ws.ln.data();
  float* qkv = ws.qkv.data();
  float* attn = ws.attn.data();
  float* mlp = ws.mlp.data();
  // Attention branch.
  layernorm_forward(ln, nullptr, nullptr, x, w.ln_1_weight, w.ln_1_bias, rows, d, eps_);
  linear_forward(qkv, ln, w.in_proj_q, w.in_proj_bias, rows, d, 3 * d);
  linear_forward(qkv + d, ln, w.in_proj_kv, w.in_proj_bias + d, rows, d, 3 * d);
  attention_forward(attn, nullptr, qkv, B, T, d, heads_, causal);
  // The residual adds fuse into the products: x += attn W^T + b (accumulate).
  linear_forward(x, attn, w.out_proj, w.out_proj_bias, rows, d, d, /*accumulate=*/true);
  // MLP branch.
  layernorm_forward(ln, nullptr, nullptr, x, w.ln_2_weight, w.ln_2_bias, rows, d, eps_);
  linear_forward(mlp, ln, w.c_fc, w.c_fc_bias, rows);
  activation_forward(activation_, mlp, mlp, rows * m);
  linear_forward(x, mlp, w.c_proj, w.c_proj_bias, rows, m, d, /*accumulate=*/true);
}

// The block of forward() with only the pooled rows' outputs: keys and values from every row,
// everything else (q, attention, out_proj, ln_2, MLP) on one row per sequence. For ViT-B/32
// that is 1 of 50 rows for most of the last block's work, about 7% of the tower.
void Transformer::pooled_block_forward(const ResidualBlockWeights& w, const float* x, int64_t B,
                                       int64_t T, bool causal, const PooledRows& pooled,
                                       TransformerWorkspace& ws) const {
  const int64_t rows = B * T, d = width_, m = mlp_dim_;
  float* ln = ws.ln.data();
  float* qkv = ws.qkv.data();
  float* mlp = ws.mlp.data();
  float* pooled_ln = ws.pooled_ln.data();
  float* q = ws.pooled_q.data();
  float* attn = ws.pooled_attn.data();
  float* out = pooled.out;
  layernorm_forward(ln, nullptr, nullptr, x, w.ln_1_weight, w.ln_1_bias, rows, d, eps_);
  // k | v for every row, into their usual columns of qkv.
  linear_forward(qkv + d, ln, w.in_proj_kv, w.in_proj_bias + d, rows, d, 3 * d);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = b * T + pooled.positions[b];
    std::copy(ln + row * d, ln + (row + 1) * d, pooled_ln + b * d);
    std::copy(x + row * d, x + (row + 1) * d, out + b * d);
  }
  linear_forward(q, pooled_ln, w.in_proj_q, w.in_proj_bias, B);
  attention_pooled_forward(attn, q, qkv, pooled.positions, B, T, d, heads_, causal);
  linear_forward(out, attn, w.out_proj, w.out_proj_bias, B, d, d, /*accumulate=*/true);
  layernorm_forward(pooled_ln, nullptr, nullptr, out, w.ln_2_weight, w.ln_2_bias, B, d, eps_);
  linear_forward(mlp, pooled_ln, w.c_fc, w.c_fc_bias, B);
  activation_forward(activation_, mlp, mlp, B * m);
  linear_forward(out, mlp, w.c_proj, w.c_proj_bias, B, m, d, /*accumulate=*/true);
}

void Transformer::forward(float* x, int64_t B, int64_t T, bool causal, TransformerWorkspace& ws,
                          const ActivationHook* hook, const std::string& hook_prefix,
                          const PooledRows* pooled) const {
  const int64_t d = width_;
  ws.reserve(B * T, d, mlp_dim_, pooled ? B : 0);
  const bool hooked = hook && *hook;
  const bool pool_last_block = pooled && !hooked && !blocks_.empty();
  const size_t full_blocks = blocks_.size() - (pool_last_block ? 1 : 0);
  for (size_t i = 0; i < full_blocks; ++i) {
    block_forward(blocks_[i], x, B, T, causal, ws);
    if (hooked) (*hook)(hook_prefix + "block." + std::to_string(i), x, {B, T, d});
  }
  if (pool_last_block) {
    pooled_block_forward(blocks_.back(), x, B, T, causal, *pooled, ws);
  } else if (pooled) {
    for (int64_t b = 0; b < B; ++b) {
      const float* row = x + (b * T + pooled->positions[b]) * d;
      std::copy(row, row + d, pooled->out + b * d);
    }
  }
}

}  // namespace clip
