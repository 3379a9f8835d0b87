#include "model/transformer.h"

#include "core/matmul.h"
#include "core/ops.h"

namespace clip {

void TransformerWorkspace::reserve(int64_t rows, int64_t width, int64_t mlp_dim) {
  auto fit = [](std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
  };
  fit(ln, rows * width);
  fit(qkv, rows * 3 * width);
  fit(attn, rows * width);
  fit(mlp, rows * mlp_dim);
}

Transformer::Transformer(const LoadedCheckpoint& ckpt, const std::string& prefix, int width,
                         int layers, int heads, int mlp_dim, Activation activation, float eps)
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
    ResidualBlockWeights w;
    w.ln_1_weight = get("ln_1.weight", {d});
    w.ln_1_bias = get("ln_1.bias", {d});
    w.in_proj_weight = get("attn.in_proj_weight", {3 * d, d});
    w.in_proj_bias = get("attn.in_proj_bias", {3 * d});
    w.out_proj_weight = get("attn.out_proj.weight", {d, d});
    w.out_proj_bias = get("attn.out_proj.bias", {d});
    w.ln_2_weight = get("ln_2.weight", {d});
    w.ln_2_bias = get("ln_2.bias", {d});
    w.c_fc_weight = get("mlp.c_fc.weight", {m, d});
    w.c_fc_bias = get("mlp.c_fc.bias", {m});
    w.c_proj_weight = get("mlp.c_proj.weight", {d, m});
    w.c_proj_bias = get("mlp.c_proj.bias", {d});
    blocks_.push_back(w);
  }
}

namespace {
// x[rows, d] += bias (broadcast), so a following product can accumulate onto x (beta = 1):
// x + (y W^T + b) computed as (x + b) + y W^T, saving a pass over a temporary.
void add_bias_rows(float* x, const float* bias, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= 65536)
  for (int64_t i = 0; i < rows; ++i) {
    float* r = x + i * d;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) r[c] += bias[c];
  }
}
}  // namespace

void Transformer::forward(float* x, int64_t B, int64_t T, bool causal, TransformerWorkspace& ws,
                          const ActivationHook* hook, const std::string& hook_prefix) const {
  const int64_t rows = B * T, d = width_, m = mlp_dim_;
  ws.reserve(rows, d, m);
  float* ln = ws.ln.data();
  float* qkv = ws.qkv.data();
  float* attn = ws.attn.data();
  float* mlp = ws.mlp.data();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const ResidualBlockWeights& w = blocks_[i];
    // Attention branch.
    layernorm_forward(ln, nullptr, nullptr, x, w.ln_1_weight, w.ln_1_bias, rows, d, eps_);
    linear_forward(qkv, ln, w.in_proj_weight, w.in_proj_bias, rows, 3 * d, d);
    attention_forward(attn, nullptr, qkv, B, T, d, heads_, causal);
    add_bias_rows(x, w.out_proj_bias, rows, d);
    sgemm(false, true, rows, d, d, 1.f, attn, d, w.out_proj_weight, d, 1.f, x, d);
    // MLP branch.
    layernorm_forward(ln, nullptr, nullptr, x, w.ln_2_weight, w.ln_2_bias, rows, d, eps_);
    linear_forward(mlp, ln, w.c_fc_weight, w.c_fc_bias, rows, m, d);
    activation_forward(activation_, mlp, mlp, rows * m);
    add_bias_rows(x, w.c_proj_bias, rows, d);
    sgemm(false, true, rows, d, m, 1.f, mlp, m, w.c_proj_weight, m, 1.f, x, d);
    if (hook && *hook) (*hook)(hook_prefix + "block." + std::to_string(i), x, {B, T, d});
  }
}

}  // namespace clip
