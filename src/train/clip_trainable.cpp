#include "train/clip_trainable.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/safetensors.h"
#include "model/checkpoint_writer.h"
#include "train/rng.h"

namespace clip::train {

bool excluded_from_weight_decay(const std::string& name, size_t ndim) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return ndim < 2 || has("bn") || has("ln") || has("bias") || has("logit_scale") ||
         has("embedding");
}

template <typename T>
size_t TrainableClip<T>::add_param(const std::string& name, std::vector<int64_t> shape,
                                   Tower tower) {
  ParamEntry e;
  e.name = name;
  e.numel = 1;
  for (int64_t d : shape) e.numel *= size_t(d);
  e.shape = std::move(shape);
  e.offset = total_;
  e.tower = tower;
  e.weight_decay = !excluded_from_weight_decay(name, e.shape.size());
  total_ += e.numel;
  index_[name] = entries_.size();
  entries_.push_back(std::move(e));
  return entries_.back().offset;
}

template <typename T>
std::vector<typename TrainableClip<T>::BlockParams> TrainableClip<T>::add_blocks(
    const std::string& prefix, int layers, int64_t D, int64_t F, Tower tower) {
  std::vector<BlockParams> blocks;
  for (int l = 0; l < layers; ++l) {
    const std::string p = prefix + "transformer.resblocks." + std::to_string(l) + ".";
    BlockParams b;
    b.in_w = add_param(p + "attn.in_proj_weight", {3 * D, D}, tower);
    b.in_b = add_param(p + "attn.in_proj_bias", {3 * D}, tower);
    b.out_w = add_param(p + "attn.out_proj.weight", {D, D}, tower);
    b.out_b = add_param(p + "attn.out_proj.bias", {D}, tower);
    b.ln1_w = add_param(p + "ln_1.weight", {D}, tower);
    b.ln1_b = add_param(p + "ln_1.bias", {D}, tower);
    b.fc_w = add_param(p + "mlp.c_fc.weight", {F, D}, tower);
    b.fc_b = add_param(p + "mlp.c_fc.bias", {F}, tower);
    b.proj_w = add_param(p + "mlp.c_proj.weight", {D, F}, tower);
    b.proj_b = add_param(p + "mlp.c_proj.bias", {D}, tower);
    b.ln2_w = add_param(p + "ln_2.weight", {D}, tower);
    b.ln2_b = add_param(p + "ln_2.bias", {D}, tower);
    blocks.push_back(b);
  }
  return blocks;
}

template <typename T>
TrainableClip<T>::TrainableClip(const ModelConfig& config) : config_(config) {
  const auto& v = config.vision;
  const auto& t = config.text;
  const int64_t E = config.embed_dim;
  if (v.is_resnet()) throw Error("training: only ViT image towers are supported (got a ResNet config)");
  if (v.patch_size <= 0 || v.image_size <= 0 || v.image_size % v.patch_size != 0)
    throw Error("training: image_size " + std::to_string(v.image_size) +
                " is not a multiple of patch_size " + std::to_string(v.patch_size));
  if (v.heads <= 0 || v.width % v.heads != 0 || t.heads <= 0 || t.width % t.heads != 0)
    throw Error("training: heads must divide the tower widths");
  if (E <= 0 || v.layers < 0 || t.layers < 0 || t.context_length <= 0 || t.vocab_size <= 0 ||
      v.mlp_dim <= 0 || t.mlp_dim <= 0)
    throw Error("training: invalid model configuration");
  act_ = config.activation == Activation::QuickGELU ? Act::QuickGELU : Act::GELU;
  patch_ = v.patch_size;
  const int64_t G = v.image_size / v.patch_size;
  grid2_ = G * G;
  vshape_ = {grid2_ + 1, v.width, v.heads, v.mlp_dim, v.layers, false};
  tshape_ = {t.context_length, t.width, t.heads, t.mlp_dim, t.layers, true};
  const int64_t W = v.width, D = t.width;

  const size_t vstart = total_;
  v_cls_ = add_param("visual.class_embedding", {W}, Tower::Image);
  v_pos_ = add_param("visual.positional_embedding", {grid2_ + 1, W}, Tower::Image);
  v_proj_ = add_param("visual.proj", {W, E}, Tower::Image);
  v_conv_ = add_param("visual.conv1.weight", {W, 3, patch_, patch_}, Tower::Image);
  v_lnpre_w_ = add_param("visual.ln_pre.weight", {W}, Tower::Image);
  v_lnpre_b_ = add_param("visual.ln_pre.bias", {W}, Tower::Image);
  vblocks_ = add_blocks("visual.", v.layers, W, v.mlp_dim, Tower::Image);
  v_lnpost_w_ = add_param("visual.ln_post.weight", {W}, Tower::Image);
  v_lnpost_b_ = add_param("visual.ln_post.bias", {W}, Tower::Image);
  vrange_ = {vstart, total_};
  const size_t tstart = total_;
  t_tok_ = add_param("token_embedding.weight", {t.vocab_size, D}, Tower::Text);
  t_pos_ = add_param("positional_embedding", {t.context_length, D}, Tower::Text);
  t_proj_ = add_param("text_projection", {D, E}, Tower::Text);
  tblocks_ = add_blocks("", t.layers, D, t.mlp_dim, Tower::Text);
  t_lnfin_w_ = add_param("ln_final.weight", {D}, Tower::Text);
  t_lnfin_b_ = add_param("ln_final.bias", {D}, Tower::Text);
  trange_ = {tstart, total_};
  logit_scale_offset_ = add_param("logit_scale", {}, Tower::Shared);
  params_.assign(total_, T(0));
  grads_.assign(total_, T(0));
  logit_scale_ref() = T(std::log(1.0 / 0.07));
}

template <typename T>
const ParamEntry& TrainableClip<T>::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("training: the model has no parameter named '" + name + "'");
  return entries_[it->second];
}

template <typename T>
std::pair<size_t, size_t> TrainableClip<T>::tower_range(Tower tower) const {
  if (tower == Tower::Image) return vrange_;
  if (tower == Tower::Text) return trange_;
  return {logit_scale_offset_, logit_scale_offset_ + 1};
}

template <typename T>
void TrainableClip<T>::init_openai(uint64_t seed) {
  Rng rng(seed);
  auto normal = [&](size_t off, size_t n, double std) {
    for (size_t i = 0; i < n; ++i) params_[off + i] = T(std * rng.normal());
  };
  auto uniform = [&](size_t off, size_t n, double bound) {
    for (size_t i = 0; i < n; ++i) params_[off + i] = T(bound * (2.0 * rng.uniform() - 1.0));
  };
  auto fill = [&](size_t off, size_t n, double value) {
    std::fill_n(params_.begin() + off, n, T(value));
  };
  // PyTorch module defaults: Linear/Conv weight and bias U(+-1/sqrt(fan_in)) (kaiming_uniform
  // with a = sqrt(5)); MultiheadAttention in_proj xavier_uniform, its biases 0; LayerNorm 1, 0.
  auto blocks_default = [&](const std::vector<BlockParams>& blocks, int64_t D, int64_t F) {
    for (const auto& b : blocks) {
      uniform(b.in_w, size_t(3 * D * D), std::sqrt(6.0 / double(D + 3 * D)));
      fill(b.in_b, size_t(3 * D), 0);
      uniform(b.out_w, size_t(D * D), 1.0 / std::sqrt(double(D)));
      fill(b.out_b, size_t(D), 0);
      fill(b.ln1_w, size_t(D), 1);
      fill(b.ln1_b, size_t(D), 0);
      fill(b.ln2_w, size_t(D), 1);
      fill(b.ln2_b, size_t(D), 0);
      uniform(b.fc_w, size_t(F * D), 1.0 / std::sqrt(double(D)));
      uniform(b.fc_b, size_t(F), 1.0 / std::sqrt(double(D)));
      uniform(b.proj_w, size_t(D * F), 1.0 / std::sqrt(double(F)));
      uniform(b.proj_b, size_t(D), 1.0 / std::sqrt(double(F)));
    }
  };
  const auto& v = config_.vision;
  const auto& t = config_.text;
  const int64_t W = v.width, D = t.width, E = config_.embed_dim;
  const double vscale = 1.0 / std::sqrt(double(W));
  uniform(v_conv_, size_t(W * 3 * patch_ * patch_), 1.0 / std::sqrt(double(3 * patch_ * patch_)));
  normal(v_cls_, size_t(W), vscale);
  normal(v_pos_, size_t((grid2_ + 1) * W), vscale);
  fill(v_lnpre_w_, size_t(W), 1);
  fill(v_lnpre_b_, size_t(W), 0);
  blocks_default(vblocks_, W, v.mlp_dim);
  fill(v_lnpost_w_, size_t(W), 1);
  fill(v_lnpost_b_, size_t(W), 0);
  normal(v_proj_, size_t(W * E), vscale);
  // Text tower: model.py's initialize_parameters.
  blocks_default(tblocks_, D, t.mlp_dim);
  normal(t_tok_, size_t(t.vocab_size * D), 0.02);
  normal(t_pos_, size_t(t.context_length * D), 0.01);
  const double proj_std = std::pow(double(D), -0.5) * std::pow(2.0 * t.layers, -0.5);
  const double attn_std = std::pow(double(D), -0.5);
  const double fc_std = std::pow(2.0 * D, -0.5);
  for (const auto& b : tblocks_) {
    normal(b.in_w, size_t(3 * D * D), attn_std);
    normal(b.out_w, size_t(D * D), proj_std);
    normal(b.fc_w, size_t(t.mlp_dim * D), fc_std);
    normal(b.proj_w, size_t(D * t.mlp_dim), proj_std);
  }
  fill(t_lnfin_w_, size_t(D), 1);
  fill(t_lnfin_b_, size_t(D), 0);
  normal(t_proj_, size_t(D * E), std::pow(double(D), -0.5));
  logit_scale_ref() = T(std::log(1.0 / 0.07));
}

template <typename T>
void TrainableClip<T>::load(const std::map<std::string, Tensor>& tensors, bool ignore_unknown) {
  for (const auto& e : entries_) {
    auto it = tensors.find(e.name);
    if (it == tensors.end()) throw Error("training: checkpoint lacks parameter '" + e.name + "'");
    const Tensor& t = it->second;
    if (t.shape != e.shape)
      throw Error("training: parameter '" + e.name + "' has shape " + t.shape_str() +
                  ", the model expects " + Tensor::view(nullptr, e.shape, DType::F32).shape_str());
    const Tensor f = t.dtype == DType::F32 ? t : t.to_f32();
    const float* src = f.f32();
    for (size_t i = 0; i < e.numel; ++i) params_[e.offset + i] = T(src[i]);
  }
  if (!ignore_unknown)
    for (const auto& [name, t] : tensors)
      if (!index_.count(name)) throw Error("training: checkpoint has unknown tensor '" + name + "'");
}

template <typename T>
std::map<std::string, Tensor> TrainableClip<T>::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& e : entries_) {
    Tensor t = Tensor::empty(e.shape, DType::F32);
    float* dst = t.f32();
    for (size_t i = 0; i < e.numel; ++i) dst[i] = float(params_[e.offset + i]);
    out.emplace(e.name, std::move(t));
  }
  return out;
}

template <typename T>
void TrainableClip<T>::save(const std::string& path) const {
  write_checkpoint(path, state_dict(), config_, NamingScheme::OpenAI);
}

template <typename T>
void TrainableClip<T>::save_model_directory(const std::string& dir) const {
  write_model_directory(dir, state_dict(), config_, NamingScheme::OpenCLIP);
}

template <typename T>
void TrainableClip<T>::zero_grad() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
size_t TrainableClip<T>::activation_bytes() const {
  return (vacts_.arena.size() + tacts_.arena.size()) * sizeof(T);
}

// ------------------------------------------------------------------ activation planning

template <typename T>
void TrainableClip<T>::plan(TowerActs& a, const TowerShape& s, int64_t B, bool vision) {
  if (a.B >= B && a.recompute == recompute_) return;
  B = std::max(B, a.B);
  const int64_t BL = B * s.L, D = s.D, F = s.F;
  std::vector<std::pair<T**, int64_t>> bufs;
  a.layers.assign(size_t(s.layers), LayerActs{});
  // With recomputation every layer's internals point at the first layer's (one shared set);
  // only the block outputs (res2) are per layer.
  for (size_t i = 0; i < a.layers.size(); ++i) {
    LayerActs& l = a.layers[i];
    if (i == 0 || !recompute_)
      bufs.insert(bufs.end(), {{&l.ln1, BL * D}, {&l.ln1_mean, BL}, {&l.ln1_rstd, BL},
                               {&l.qkv, BL * 3 * D}, {&l.probs, B * s.H * s.L * s.L},
                               {&l.attn, BL * D}, {&l.res1, BL * D}, {&l.ln2, BL * D},
                               {&l.ln2_mean, BL}, {&l.ln2_rstd, BL}, {&l.h, BL * F},
                               {&l.a, BL * F}});
    bufs.push_back({&l.res2, BL * D});
  }
  const int64_t cols = 3 * patch_ * patch_;
  if (vision) {
    bufs.insert(bufs.end(), {{&a.patches, B * grid2_ * cols}, {&a.ptok, B * grid2_ * D},
                             {&a.lnpre, BL * D}, {&a.lnpre_mean, BL}, {&a.lnpre_rstd, BL},
                             {&a.dptok, B * grid2_ * D}});
  }
  bufs.insert(bufs.end(), {{&a.x0, BL * D}, {&a.pooled, B * D}, {&a.lnfin, B * D},
                           {&a.lnfin_mean, B}, {&a.lnfin_rstd, B}, {&a.g1, BL * D},
                           {&a.g2, BL * D}, {&a.dln, BL * D}, {&a.dqkv, BL * 3 * D},
                           {&a.dattn, BL * D}, {&a.dh, BL * F}, {&a.da, BL * F},
                           {&a.dpooled, B * D}, {&a.dlnfin, B * D}});
  int64_t total = 0;
  for (auto& [p, n] : bufs) total += n;
  a.arena.assign(size_t(total), T(0));
  T* cur = a.arena.data();
  for (auto& [p, n] : bufs) {
    *p = cur;
    cur += n;
  }
  if (recompute_)
    for (size_t i = 1; i < a.layers.size(); ++i) {
      T* own = a.layers[i].res2;
      a.layers[i] = a.layers[0];
      a.layers[i].res2 = own;
    }
  a.B = B;
  a.recompute = recompute_;
}

template <typename T>
void TrainableClip<T>::set_recompute(bool on) {
  recompute_ = on;
}

// ------------------------------------------------------------------ transformer

template <typename T>
void TrainableClip<T>::transformer_forward(TowerActs& a, const TowerShape& s,
                                           const std::vector<BlockParams>& blocks, const T* x,
                                           int64_t B) {
  for (size_t l = 0; l < blocks.size(); ++l)
    block_forward(a, s, blocks[l], l, l == 0 ? x : a.layers[l - 1].res2, B);
}

template <typename T>
void TrainableClip<T>::block_forward(TowerActs& a, const TowerShape& s, const BlockParams& p,
                                     size_t l, const T* in, int64_t B) {
  const int64_t BL = B * s.L, D = s.D, F = s.F;
  const double eps = config_.layer_norm_eps;
  const T* P = params_.data();
  LayerActs& A = a.layers[l];
  {
    layernorm_forward(A.ln1, A.ln1_mean, A.ln1_rstd, in, P + p.ln1_w, P + p.ln1_b, BL, D, eps);
    linear_forward(A.qkv, A.ln1, P + p.in_w, P + p.in_b, BL, 3 * D, D);
    attention_forward(A.attn, A.probs, A.qkv, B, s.L, D, s.H, s.causal);
    std::copy_n(in, BL * D, A.res1);
    linear_forward(A.res1, A.attn, P + p.out_w, P + p.out_b, BL, D, D, /*accumulate=*/true);
    layernorm_forward(A.ln2, A.ln2_mean, A.ln2_rstd, A.res1, P + p.ln2_w, P + p.ln2_b, BL, D, eps);
    linear_forward(A.h, A.ln2, P + p.fc_w, P + p.fc_b, BL, F, D);
    activation_forward(act_, A.a, A.h, BL * F);
    std::copy_n(A.res1, BL * D, A.res2);
    linear_forward(A.res2, A.a, P + p.proj_w, P + p.proj_b, BL, D, F, /*accumulate=*/true);
  }
}

template <typename T>
void TrainableClip<T>::transformer_backward(TowerActs& a, const TowerShape& s,
                                            const std::vector<BlockParams>& blocks, const T* x,
                                            int64_t B) {
  const int64_t BL = B * s.L, D = s.D, F = s.F;
  const T* P = params_.data();
  T* G = grads_.data();
  auto zero = [](T* p, int64_t n) { std::fill_n(p, n, T(0)); };
  for (size_t li = blocks.size(); li-- > 0;) {
    const BlockParams& p = blocks[li];
    LayerActs& A = a.layers[li];
    const T* in = li == 0 ? x : a.layers[li - 1].res2;
    // With recomputation the shared internals hold the last block's values: recompute this
    // block's from its input (its res2 is rewritten with identical values).
    if (a.recompute && li + 1 != blocks.size()) block_forward(a, s, p, li, in, B);
    // res2 = res1 + c_proj(act(c_fc(ln_2(res1))))
    std::copy_n(a.g1, BL * D, a.g2);  // d res1 via the residual path
    zero(a.da, BL * F);
    linear_backward(a.da, G + p.proj_w, G + p.proj_b, a.g1, A.a, P + p.proj_w, BL, D, F);
    zero(a.dh, BL * F);
    activation_backward(act_, a.dh, a.da, A.h, BL * F);
    zero(a.dln, BL * D);
    linear_backward(a.dln, G + p.fc_w, G + p.fc_b, a.dh, A.ln2, P + p.fc_w, BL, F, D);
    layernorm_backward(a.g2, G + p.ln2_w, G + p.ln2_b, a.dln, A.res1, P + p.ln2_w, A.ln2_mean,
                       A.ln2_rstd, BL, D);
    // res1 = in + out_proj(attention(in_proj(ln_1(in))))
    std::copy_n(a.g2, BL * D, a.g1);  // d in via the residual path
    zero(a.dattn, BL * D);
    linear_backward(a.dattn, G + p.out_w, G + p.out_b, a.g2, A.attn, P + p.out_w, BL, D, D);
    zero(a.dqkv, BL * 3 * D);
    attention_backward(a.dqkv, a.dattn, A.qkv, A.probs, B, s.L, D, s.H, s.causal);
    zero(a.dln, BL * D);
    linear_backward(a.dln, G + p.in_w, G + p.in_b, a.dqkv, A.ln1, P + p.in_w, BL, 3 * D, D);
    layernorm_backward(a.g1, G + p.ln1_w, G + p.ln1_b, a.dln, in, P + p.ln1_w, A.ln1_mean,
                       A.ln1_rstd, BL, D);
  }
}

// ------------------------------------------------------------------ towers

template <typename T>
void TrainableClip<T>::forward_image(const float* pixels, int64_t B, T* features) {
  if (B <= 0) throw Error("training: forward_image needs at least one image");
  plan(vacts_, vshape_, B, true);
  TowerActs& a = vacts_;
  a.B_used = B;
  const TowerShape& s = vshape_;
  const int64_t W = s.D, E = config_.embed_dim, cols = 3 * patch_ * patch_;
  const T* P = params_.data();
  patchify(a.patches, pixels, B, int64_t(config_.vision.image_size), patch_);
  linear_forward<T>(a.ptok, a.patches, P + v_conv_, nullptr, B * grid2_, W, cols);
  vit_embed_forward(a.x0, a.ptok, P + v_cls_, P + v_pos_, B, grid2_, W);
  layernorm_forward(a.lnpre, a.lnpre_mean, a.lnpre_rstd, a.x0, P + v_lnpre_w_, P + v_lnpre_b_,
                    B * s.L, W, double(config_.layer_norm_eps));
  transformer_forward(a, s, vblocks_, a.lnpre, B);
  const T* out = s.layers > 0 ? a.layers.back().res2 : a.lnpre;
  a.pool_index.assign(size_t(B), 0);  // the class token
  gather_rows_forward(a.pooled, out, a.pool_index.data(), B, s.L, W);
  layernorm_forward(a.lnfin, a.lnfin_mean, a.lnfin_rstd, a.pooled, P + v_lnpost_w_,
                    P + v_lnpost_b_, B, W, double(config_.layer_norm_eps));
  project_forward(features, a.lnfin, P + v_proj_, B, E, W);
}

template <typename T>
void TrainableClip<T>::backward_image(const T* d_features) {
  TowerActs& a = vacts_;
  const int64_t B = a.B_used;
  if (B == 0) throw Error("training: backward_image before forward_image");
  const TowerShape& s = vshape_;
  const int64_t W = s.D, E = config_.embed_dim, cols = 3 * patch_ * patch_, BL = B * s.L;
  const T* P = params_.data();
  T* G = grads_.data();
  std::fill_n(a.dlnfin, B * W, T(0));
  project_backward(a.dlnfin, G + v_proj_, d_features, a.lnfin, P + v_proj_, B, E, W);
  std::fill_n(a.dpooled, B * W, T(0));
  layernorm_backward(a.dpooled, G + v_lnpost_w_, G + v_lnpost_b_, a.dlnfin, a.pooled,
                     P + v_lnpost_w_, a.lnfin_mean, a.lnfin_rstd, B, W);
  std::fill_n(a.g1, BL * W, T(0));
  gather_rows_backward(a.g1, a.dpooled, a.pool_index.data(), B, s.L, W);
  transformer_backward(a, s, vblocks_, a.lnpre, B);
  std::fill_n(a.g2, BL * W, T(0));
  layernorm_backward(a.g2, G + v_lnpre_w_, G + v_lnpre_b_, a.g1, a.x0, P + v_lnpre_w_,
                     a.lnpre_mean, a.lnpre_rstd, BL, W);
  std::fill_n(a.dptok, B * grid2_ * W, T(0));
  vit_embed_backward(a.dptok, G + v_cls_, G + v_pos_, a.g2, B, grid2_, W);
  linear_backward<T>(nullptr, G + v_conv_, nullptr, a.dptok, a.patches, P + v_conv_,
                     B * grid2_, W, cols);
}

template <typename T>
void TrainableClip<T>::forward_text(const int32_t* ids, int64_t B, T* features) {
  if (B <= 0) throw Error("training: forward_text needs at least one text");
  plan(tacts_, tshape_, B, false);
  TowerActs& a = tacts_;
  a.B_used = B;
  const TowerShape& s = tshape_;
  const int64_t D = s.D, E = config_.embed_dim, L = s.L;
  const T* P = params_.data();
  a.ids.assign(ids, ids + B * L);
  a.pool_index.assign(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b) {
    int32_t best = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int32_t id = ids[b * L + l];
      if (id < 0 || id >= config_.text.vocab_size)
        throw Error("training: token id " + std::to_string(id) + " at row " + std::to_string(b) +
                    " is outside the vocabulary of " + std::to_string(config_.text.vocab_size));
      if (id > ids[b * L + best]) best = int32_t(l);  // first maximum, as torch.argmax
    }
    a.pool_index[size_t(b)] = best;
  }
  token_embed_forward(a.x0, a.ids.data(), P + t_tok_, P + t_pos_, B, L, D);
  transformer_forward(a, s, tblocks_, a.x0, B);
  const T* out = s.layers > 0 ? a.layers.back().res2 : a.x0;
  gather_rows_forward(a.pooled, out, a.pool_index.data(), B, L, D);
  // ln_final is row-wise, so applying it to the pooled rows only equals model.py's order.
  layernorm_forward(a.lnfin, a.lnfin_mean, a.lnfin_rstd, a.pooled, P + t_lnfin_w_,
                    P + t_lnfin_b_, B, D, double(config_.layer_norm_eps));
  project_forward(features, a.lnfin, P + t_proj_, B, E, D);
}

template <typename T>
void TrainableClip<T>::backward_text(const T* d_features) {
  TowerActs& a = tacts_;
  const int64_t B = a.B_used;
  if (B == 0) throw Error("training: backward_text before forward_text");
  const TowerShape& s = tshape_;
  const int64_t D = s.D, E = config_.embed_dim, L = s.L;
  const T* P = params_.data();
  T* G = grads_.data();
  std::fill_n(a.dlnfin, B * D, T(0));
  project_backward(a.dlnfin, G + t_proj_, d_features, a.lnfin, P + t_proj_, B, E, D);
  std::fill_n(a.dpooled, B * D, T(0));
  layernorm_backward(a.dpooled, G + t_lnfin_w_, G + t_lnfin_b_, a.dlnfin, a.pooled,
                     P + t_lnfin_w_, a.lnfin_mean, a.lnfin_rstd, B, D);
  std::fill_n(a.g1, B * L * D, T(0));
  gather_rows_backward(a.g1, a.dpooled, a.pool_index.data(), B, L, D);
  transformer_backward(a, s, tblocks_, a.x0, B);
  token_embed_backward(G + t_tok_, G + t_pos_, a.g1, a.ids.data(), B, L, D);
}

template class TrainableClip<float>;
template class TrainableClip<double>;

}  // namespace clip::train
