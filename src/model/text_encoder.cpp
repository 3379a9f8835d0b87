#include "model/text_encoder.h"

#include <algorithm>

#include "core/matmul.h"
#include "core/ops.h"

namespace clip {

TextTransformer::TextTransformer(const LoadedCheckpoint& ckpt, Precision precision) {
  const TextConfig& tc = ckpt.config.text;
  context_length_ = tc.context_length;
  vocab_ = tc.vocab_size;
  width_ = tc.width;
  embed_dim_ = ckpt.config.embed_dim;
  eps_ = ckpt.config.layer_norm_eps;
  const int64_t d = width_;
  token_embedding_ = ckpt.get("token_embedding.weight", {vocab_, d}).f32();
  positional_embedding_ = ckpt.get("positional_embedding", {context_length_, d}).f32();
  ln_final_weight_ = ckpt.get("ln_final.weight", {d}).f32();
  ln_final_bias_ = ckpt.get("ln_final.bias", {d}).f32();
  text_projection_ = ckpt.get("text_projection", {d, embed_dim_}).f32();
  transformer_ = Transformer(ckpt, "transformer.", width_, tc.layers, tc.heads, tc.mlp_dim,
                             ckpt.config.activation, eps_, precision);
}

void TextTransformer::encode(const int32_t* ids, int batch, int context, float* out,
                             const ActivationHook* hook) {
  if (batch <= 0) return;
  if (context <= 0 || context > context_length_)
    throw Error("text encoder: token rows of length " + std::to_string(context) +
                " (the model's context length is " + std::to_string(context_length_) + ")");
  const int64_t B = batch, d = width_;
  // Pool position per row: the first maximal id (torch.argmax returns the first maximum).
  std::vector<int64_t> pool(static_cast<size_t>(B));
  int64_t T = 1;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* row = ids + b * context;
    pool[size_t(b)] = std::max_element(row, row + context) - row;
    T = std::max(T, pool[size_t(b)] + 1);
  }
  auto emit = [&](const std::string& name, const float* data, std::vector<int64_t> shape) {
    if (hook && *hook) (*hook)(name, data, shape);
  };
  if (int64_t(x_.size()) < B * T * d) x_.resize(size_t(B * T * d));
  if (int64_t(pooled_.size()) < B * d) pooled_.resize(size_t(B * d));
  float* x = x_.data();
  embedding_forward(x, ids, context, token_embedding_, vocab_, positional_embedding_, B, T, d);
  emit("text.embed", x, {B, T, d});
  float* pooled = pooled_.data();
  const PooledRows end_of_text{pool.data(), pooled};
  transformer_.forward(x, B, T, /*causal=*/true, ws_, hook, "text.", &end_of_text);
  // LayerNorm is per row, so ln_final on the pooled rows equals pooling after ln_final.
  layernorm_forward(pooled, nullptr, nullptr, pooled, ln_final_weight_, ln_final_bias_, B, d,
                    eps_);
  emit("text.ln_final", pooled, {B, d});
  sgemm(false, false, B, embed_dim_, d, 1.f, pooled, d, text_projection_, embed_dim_, 0.f, out,
        embed_dim_);
  emit("text.output", out, {B, int64_t(embed_dim_)});
}

}  // namespace clip
