#include "nn/clip_network.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/safetensors.h"
#include "model/checkpoint_writer.h"
#include "nn/resnet_tower.h"
#include "core/rng.h"

namespace clip::nn {

bool excluded_from_weight_decay(const std::string& name, size_t ndim) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return ndim < 2 || has("bn") || has("ln") || has("bias") || has("logit_scale") ||
         has("embedding");
}

size_t append_param(std::vector<ParamEntry>& entries, std::map<std::string, size_t>& index,
                    size_t& total, const std::string& name, std::vector<int64_t> shape,
                    Tower tower) {
  ParamEntry e;
  e.name = name;
  e.numel = 1;
  for (int64_t d : shape) e.numel *= size_t(d);
  e.shape = std::move(shape);
  e.offset = total;
  e.tower = tower;
  e.weight_decay = !excluded_from_weight_decay(name, e.shape.size());
  total += e.numel;
  index[name] = entries.size();
  entries.push_back(std::move(e));
  return entries.back().offset;
}

template <typename T>
size_t ClipNetwork<T>::add_param(const std::string& name, std::vector<int64_t> shape,
                                   Tower tower) {
  return append_param(entries_, index_, total_, name, std::move(shape), tower);
}

template <typename T>
std::vector<typename ClipNetwork<T>::BlockParams> ClipNetwork<T>::add_blocks(
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

// The parameter list (the schema) of the configuration, checked first; `where` starts the
// errors (the checkpoint's file, or "training"). with_resnet: a ResNet image tower's
// parameters are part of this network (training); otherwise that tower is left out.
template <typename T>
void ClipNetwork<T>::define_parameters(const std::string& where, bool with_resnet) {
  const auto& v = config_.vision;
  const auto& t = config_.text;
  const int64_t E = config_.embed_dim;
  if (!v.is_resnet() && (v.patch_size <= 0 || v.image_size <= 0 || v.image_size % v.patch_size != 0))
    throw Error(where + ": image size " + std::to_string(v.image_size) +
                " is not a multiple of the patch size " + std::to_string(v.patch_size));
  if ((!v.is_resnet() && (v.heads <= 0 || v.width % v.heads != 0)) || t.heads <= 0 ||
      t.width % t.heads != 0)
    throw Error(where + ": the head counts must divide the tower widths (image " +
                std::to_string(v.width) + " / " + std::to_string(v.heads) + ", text " +
                std::to_string(t.width) + " / " + std::to_string(t.heads) + ")");
  if (E <= 0 || v.layers < 0 || t.layers < 0 || t.context_length <= 0 || t.vocab_size <= 0 ||
      (!v.is_resnet() && v.mlp_dim <= 0) || t.mlp_dim <= 0)
    throw Error(where + ": invalid model configuration");
  act_ = config_.activation == Activation::QuickGELU ? Act::QuickGELU : Act::GELU;
  tshape_ = {t.context_length, t.width, t.heads, t.mlp_dim, t.layers, true};
  const int64_t D = t.width;

  const size_t vstart = total_;
  if (v.is_resnet()) {
    has_image_tower_ = with_resnet;
    if (with_resnet) {
      // The ResNet tower's own layout (OpenAI names and order) becomes the image range; the
      // tower is bound to it once the arenas exist.
      resnet_ = std::make_unique<ResNetTower<T>>(v, E, "visual.", /*own_arenas=*/false);
      for (const ParamEntry& e : resnet_->parameters()) add_param(e.name, e.shape, Tower::Image);
    }
  } else {
    add_vit_parameters();
  }
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
  // SigLIP: the sigmoid loss's learned bias, right after logit_scale (the shared range).
  if (config_.init_logit_bias) logit_bias_offset_ = add_param("logit_bias", {}, Tower::Shared);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_schema(
    const ModelConfig& config) {
  const ClipNetwork<float> layout(config, ClipNetwork<float>::LayoutOnly{});
  std::map<std::string, int64_t> batch_norms;  // "<prefix>.bias" -> channels
  if (const ResNetTower<float>* r = layout.resnet())
    for (const BatchNormBuffers& b : r->batch_norms()) batch_norms[b.prefix + ".bias"] = b.channels;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const ParamEntry& e : layout.parameters()) {
    out.emplace_back(e.name, e.shape);
    auto bn = batch_norms.find(e.name);  // its buffers follow, as in OpenAI's state dict
    if (bn != batch_norms.end()) {
      const std::string prefix = e.name.substr(0, e.name.size() - 5);
      out.emplace_back(prefix + ".running_mean", std::vector<int64_t>{bn->second});
      out.emplace_back(prefix + ".running_var", std::vector<int64_t>{bn->second});
    }
  }
  return out;
}

template <typename T>
ClipNetwork<T>::ClipNetwork(const ModelConfig& config, LayoutOnly) : config_(config) {
  define_parameters("model configuration", /*with_resnet=*/true);
}

template <typename T>
ClipNetwork<T>::ClipNetwork(const ModelConfig& config) : config_(config) {
  define_parameters("training", /*with_resnet=*/true);
  params_.assign(total_, T(0));
  grads_.assign(total_, T(0));
  if (resnet_) resnet_->bind(params_.data() + vrange_.first, grads_.data() + vrange_.first);
  const T* P = params_.data();
  bind_weights([P](const ParamEntry& e) { return P + e.offset; });
  init_logits();
}

template <typename T>
ClipNetwork<T>::ClipNetwork(const LoadedCheckpoint& ckpt, Precision precision)
    : config_(ckpt.config) {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error(ckpt.weights_path + ": inference networks compute in float");
  } else {
    define_parameters(ckpt.weights_path, /*with_resnet=*/false);
    bind_weights([&ckpt](const ParamEntry& e) -> const T* {
      if (e.name == "logit_scale" || e.name == "logit_bias") {
        const Tensor& ls = ckpt.get(e.name);
        if (ls.numel() != 1)
          throw Error(ckpt.weights_path + ": " + e.name + " has shape " + ls.shape_str() +
                      ", expected a single value");
        return ls.f32();
      }
      return ckpt.get(e.name, e.shape).f32();
    });
    prepare_blocks(precision, &ckpt);
  }
}

template <typename T>
void ClipNetwork<T>::bind_weights(const std::function<const T*(const ParamEntry&)>& source) {
  std::map<size_t, const T*> at;  // arena offset -> the tensor the forward reads
  for (const ParamEntry& e : entries_) at[e.offset] = source(e);
  auto w = [&](size_t offset) { return at.at(offset); };
  auto blocks = [&](const std::vector<BlockParams>& params) {
    std::vector<BlockWeights> out;
    for (const BlockParams& p : params)
      out.push_back({w(p.ln1_w), w(p.ln1_b), w(p.in_w), w(p.in_b), w(p.out_w), w(p.out_b),
                     w(p.ln2_w), w(p.ln2_b), w(p.fc_w), w(p.fc_b), w(p.proj_w), w(p.proj_b)});
    return out;
  };
  vweights_ = blocks(vblocks_);
  tweights_ = blocks(tblocks_);
  if (has_image_tower_ && !resnet_)
    vw_ = {w(v_conv_), w(v_cls_), w(v_pos_), w(v_lnpre_w_), w(v_lnpre_b_), w(v_lnpost_w_),
           w(v_lnpost_b_), w(v_proj_)};
  tw_ = {w(t_tok_), w(t_pos_), w(t_lnfin_w_), w(t_lnfin_b_), w(t_proj_)};
  logit_scale_w_ = w(logit_scale_offset_);
}

// The blocks' linear layers prepared once: packed f32 (or bf16) copies of the weights. From a
// checkpoint, weights viewed in the mapped file are packed and their pages released, so the
// copy costs no memory; heap copies made at load must stay for the unpacked fallback, so
// packing them holds them twice: done for an F32 file's few (Hugging Face's q/k/v
// concatenated into in_proj: +25 % of in_proj for ViT-B/32), so that every naming scheme
// computes the same products and gives bit-identical features; not for f16/bf16 files, where
// every weight is such a copy. The pages are released as each layer is prepared, so loading
// never holds both for a whole tower; they are read again only by products run on another
// thread count.
template <typename T>
void ClipNetwork<T>::prepare_blocks(Precision precision, const LoadedCheckpoint* ckpt) {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error("only float networks can be prepared for inference");
  } else {
    // One linear layer: prepared, and its pages in the mapped file released when the
    // products read a copy.
    auto linear = [&](const float* weight, int64_t rows, int64_t cols, Tower tower) {
      // Stored in q4_0 / q8_0 blocks (a GGUF file): products on the blocks as they are, and
      // the dequantized copy made at load given back.
      int64_t first_row = 0;
      if (const LoadedCheckpoint::BlockRows* b = ckpt ? ckpt->block_rows_for(weight, rows, cols, first_row) : nullptr) {
        const int64_t row_bytes = int64_t(b->bytes.size()) / b->rows;
        PackedWeight pw(block_weight_from_ggml(b->format, b->bytes.data() + first_row * row_bytes, rows, cols,
                                               ckpt->weights_path.c_str()));
        ckpt->discard_dequantized(weight, rows * cols);
        return pw;
      }
      const bool pack =
          !ckpt || ckpt->stored_dtype == DType::F32 || ckpt->is_mapped(weight, rows * cols);
      // int4 in the text tower: 8-bit blocks (q8_0). On the seeded ViT-B/32 reference, q4_0
      // text weights leave the text features at cosine 0.964 to fp32 (image tower: 0.997),
      // q8_0 at 0.9998 (docs/RESULTS.md, "int4"); the text tower is 30 % of the block weights.
      PackedWeight pw = precision == Precision::INT4 && tower == Tower::Text
                            ? PackedWeight(block_weight_from_f32(BlockFormat::Q8_0, weight, rows, cols), weight)
                            : PackedWeight(weight, rows, cols, pack, precision);
      if (ckpt && pw.prepared_copy()) ckpt->release_pages(weight, rows * cols);
      return pw;
    };
    auto prepare_tower = [&](const std::vector<BlockWeights>& weights, int64_t D, int64_t F, Tower t) {
      std::vector<PreparedBlock> out;
      for (const BlockWeights& w : weights)
        out.push_back({linear(w.in_w, D, D, t), linear(w.in_w + D * D, 2 * D, D, t), linear(w.out_w, D, D, t),
                       linear(w.fc_w, F, D, t), linear(w.proj_w, D, F, t)});
      return out;
    };
    vprep_ = prepare_tower(vweights_, vshape_.D, vshape_.F, Tower::Image);
    tprep_ = prepare_tower(tweights_, tshape_.D, tshape_.F, Tower::Text);
    // The patch embedding: a linear layer over unfolded patches.
    if (vw_.conv) vconv_prep_ = linear(vw_.conv, vshape_.D, 3 * patch_ * patch_, Tower::Image);
  }
}

template <typename T>
void ClipNetwork<T>::prepare(Precision precision) {
  if (inference_only()) throw Error("prepare: this network was prepared when it was loaded");
  prepare_blocks(precision, nullptr);
  if (resnet_) resnet_->prepare();  // from its parameters and running statistics
}

template <typename T>
bool ClipNetwork<T>::prepared() const {
  return !vprep_.empty() || !tprep_.empty() || vconv_prep_.has_value() || (resnet_ && resnet_->prepared());
}

template <typename T>
void ClipNetwork<T>::unprepare() {
  if (inference_only()) return;  // its preparation is its only copy of the products' weights
  vprep_.clear();
  tprep_.clear();
  vconv_prep_.reset();
  if (resnet_) resnet_->unprepare();
}

template <typename T>
void ClipNetwork<T>::add_vit_parameters() {
  const auto& v = config_.vision;
  const int64_t W = v.width, E = config_.embed_dim;
  patch_ = v.patch_size;
  const int64_t G = v.image_size / v.patch_size;
  grid2_ = G * G;
  vshape_ = {grid2_ + 1, v.width, v.heads, v.mlp_dim, v.layers, false};
  v_cls_ = add_param("visual.class_embedding", {W}, Tower::Image);
  v_pos_ = add_param("visual.positional_embedding", {grid2_ + 1, W}, Tower::Image);
  v_proj_ = add_param("visual.proj", {W, E}, Tower::Image);
  v_conv_ = add_param("visual.conv1.weight", {W, 3, patch_, patch_}, Tower::Image);
  v_lnpre_w_ = add_param("visual.ln_pre.weight", {W}, Tower::Image);
  v_lnpre_b_ = add_param("visual.ln_pre.bias", {W}, Tower::Image);
  vblocks_ = add_blocks("visual.", v.layers, W, v.mlp_dim, Tower::Image);
  v_lnpost_w_ = add_param("visual.ln_post.weight", {W}, Tower::Image);
  v_lnpost_b_ = add_param("visual.ln_post.bias", {W}, Tower::Image);
}

template <typename T>
ClipNetwork<T>::~ClipNetwork() = default;
template <typename T>
ClipNetwork<T>::ClipNetwork(ClipNetwork&&) noexcept = default;

template <typename T>
void ClipNetwork<T>::set_image_training(bool on) {
  if (resnet_) resnet_->set_training(on);
}

template <typename T>
bool ClipNetwork<T>::image_training() const {
  return resnet_ ? resnet_->training() : true;
}

template <typename T>
const ParamEntry& ClipNetwork<T>::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("training: the model has no parameter named '" + name + "'");
  return entries_[it->second];
}

template <typename T>
std::pair<size_t, size_t> ClipNetwork<T>::tower_range(Tower tower) const {
  if (tower == Tower::Image) return vrange_;
  if (tower == Tower::Text) return trange_;
  return {logit_scale_offset_, logit_scale_offset_ + (has_logit_bias() ? 2 : 1)};
}

template <typename T>
void ClipNetwork<T>::init_openai(uint64_t seed) {
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
  if (resnet_) {
    resnet_->init_openai(rng);  // model.py's ModifiedResNet initialisation, same generator
  } else {
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
  }
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
  init_logits();
}

// CLIP: logit_scale = ln(1 / 0.07). SigLIP (open_clip's init): ln 10 and the configured bias (-10).
template <typename T>
void ClipNetwork<T>::init_logits() {
  if (!has_logit_bias()) {
    logit_scale_ref() = T(std::log(1.0 / 0.07));
    return;
  }
  logit_scale_ref() = T(std::log(10.0));
  params_[logit_bias_offset_] = T(*config_.init_logit_bias);
}

template <typename T>
void ClipNetwork<T>::load(const std::map<std::string, Tensor>& tensors, bool ignore_unknown) {
  std::set<std::string> buffers;  // known names that are not parameters
  if (resnet_) {
    resnet_->load(tensors);  // the image range (bound) and the batch-norm buffers
    for (const auto& b : resnet_->batch_norms())
      for (const char* s : {".running_mean", ".running_var", ".num_batches_tracked"})
        buffers.insert(b.prefix + s);
  }
  for (const auto& e : entries_) {
    if (resnet_ && e.tower == Tower::Image) continue;
    auto it = tensors.find(e.name);
    // A CLIP checkpoint fine-tuned with the sigmoid loss: the bias keeps its initial value.
    if (it == tensors.end() && e.name == "logit_bias" && ignore_unknown) continue;
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
      if (!index_.count(name) && !buffers.count(name))
        throw Error("training: checkpoint has unknown tensor '" + name + "'");
}

template <typename T>
std::map<std::string, Tensor> ClipNetwork<T>::state_dict() const {
  std::map<std::string, Tensor> out;
  if (resnet_) out = resnet_->state_dict();  // the image parameters and batch-norm buffers
  for (const auto& e : entries_) {
    if (resnet_ && e.tower == Tower::Image) continue;
    Tensor t = Tensor::empty(e.shape, DType::F32);
    float* dst = t.f32();
    for (size_t i = 0; i < e.numel; ++i) dst[i] = float(params_[e.offset + i]);
    out.emplace(e.name, std::move(t));
  }
  return out;
}

template <typename T>
void ClipNetwork<T>::save(const std::string& path) const {
  write_checkpoint(path, state_dict(), config_, NamingScheme::OpenAI);
}

template <typename T>
void ClipNetwork<T>::save_model_directory(const std::string& dir) const {
  write_model_directory(dir, state_dict(), config_, NamingScheme::OpenCLIP);
}

template <typename T>
void ClipNetwork<T>::zero_grad() {
  // 600 MB for ViT-B/32: split over the threads (one memset is bandwidth-bound on one core).
  const int64_t n = int64_t(grads_.size());
  T* g = grads_.data();
#pragma omp parallel if (n >= (int64_t(1) << 20))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    std::fill(g + n * t / nt, g + n * (t + 1) / nt, T(0));
  }
}

template <typename T>
size_t ClipNetwork<T>::activation_bytes() const {
  return (vacts_.arena.size() + tacts_.arena.size() + vinf_.arena.size() +
          tinf_.arena.size()) * sizeof(T) +
         (resnet_ ? resnet_->activation_bytes() : 0);
}

// ------------------------------------------------------------------ activation planning

template <typename T>
void ClipNetwork<T>::plan(TowerActs& a, const TowerShape& s, int64_t B, bool vision) {
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
  bufs.insert(bufs.end(), {{&a.pool_ln1, B * D}, {&a.pool_q, B * D}, {&a.pool_dq, B * D}});
  bufs.insert(bufs.end(), {{&a.x0, BL * D}, {&a.pooled, B * D}, {&a.lnfin, B * D},
                           {&a.lnfin_mean, B}, {&a.lnfin_rstd, B}, {&a.g1, BL * D},
                           {&a.dln, BL * D}, {&a.dqkv, BL * 3 * D}, {&a.dattn, BL * D},
                           {&a.da, BL * F}, {&a.dpooled, B * D}, {&a.dlnfin, B * D}});
  int64_t total = 0;
  for (auto& [p, n] : bufs) total += n;
  decltype(a.arena)().swap(a.arena);  // release first: no copy of the old contents
  a.arena.resize(size_t(total));      // uninitialised (see TowerActs::arena)
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
  a.pool_res = a.layers.empty() ? nullptr : a.layers.back().res1;
  a.B = B;
  a.recompute = recompute_;
}

// The inference plan: no saved activations. The blocks run in place on the tower's stream
// (ln_pre's output for images, the embeddings for texts), and every block's internals share
// one set of buffers; the last block's pooled rows get their own residual buffer.
template <typename T>
void ClipNetwork<T>::plan_inference(TowerActs& a, const TowerShape& s, int64_t B, bool vision) {
  if (a.B >= B) return;
  const int64_t BL = B * s.L, D = s.D, F = s.F, cols = 3 * patch_ * patch_;
  T *ln, *ln_mean, *ln_rstd, *qkv, *probs, *attn, *mlp;
  std::vector<std::pair<T**, int64_t>> bufs = {
      {&ln, BL * D},      {&ln_mean, BL},          {&ln_rstd, BL},
      {&qkv, BL * 3 * D}, {&probs, B * s.H * s.L * s.L}, {&attn, BL * D},
      {&mlp, BL * F},     {&a.pool_res, B * D},    {&a.x0, BL * D},
      {&a.pooled, B * D}, {&a.lnfin, B * D},       {&a.lnfin_mean, B},
      {&a.lnfin_rstd, B}, {&a.pool_ln1, B * D},    {&a.pool_q, B * D}};
  if (vision)
    bufs.insert(bufs.end(), {{&a.patches, B * grid2_ * cols}, {&a.ptok, B * grid2_ * D},
                             {&a.lnpre, BL * D}, {&a.lnpre_mean, BL}, {&a.lnpre_rstd, BL}});
  int64_t total = 0;
  for (auto& [p, n] : bufs) total += n;
  decltype(a.arena)().swap(a.arena);
  a.arena.resize(size_t(total));
  T* cur = a.arena.data();
  for (auto& [p, n] : bufs) {
    *p = cur;
    cur += n;
  }
  T* stream = vision ? a.lnpre : a.x0;
  const LayerActs shared{ln, ln_mean, ln_rstd, qkv, probs, attn, stream, ln, ln_mean, ln_rstd,
                         mlp, mlp, stream};
  a.layers.assign(size_t(s.layers), shared);
  a.B = B;
  a.inference = true;
}

template <typename T>
void ClipNetwork<T>::set_recompute(bool on) {
  recompute_ = on;
}

// ------------------------------------------------------------------ transformer

namespace {
// Pooled rows: y[b] = x[row[b]] and dx[row[b]] += dy[b] (row: absolute row indices).
template <typename T>
void gather_pooled(T* y, const T* x, const std::vector<int64_t>& row, int64_t D) {
  for (size_t b = 0; b < row.size(); ++b) std::copy_n(x + row[b] * D, D, y + int64_t(b) * D);
}
template <typename T>
void scatter_add_pooled(T* dx, const T* dy, const std::vector<int64_t>& row, int64_t D) {
  for (size_t b = 0; b < row.size(); ++b) {
    T* r = dx + row[b] * D;
    const T* g = dy + int64_t(b) * D;
    for (int64_t d = 0; d < D; ++d) r[d] += g[d];
  }
}
}  // namespace

template <typename T>
void ClipNetwork<T>::attention_fwd(TowerActs& a, const TowerShape& s, LayerActs& A, int64_t B) {
  if (a.seq_off.empty())
    attention_forward(A.attn, A.probs, A.qkv, B, s.L, s.D, s.H, s.causal);
  else
    attention_forward_packed(A.attn, A.probs, A.qkv, a.seq_off.data(), B, s.D, s.H, s.causal);
}

namespace {
// y = x W^T + b (y with row stride ldy, default N): through the prepared weight when there is
// one (inference), else the raw one.
template <typename T>
void linear_maybe_prepared(T* y, const T* x, const T* W, const PackedWeight* prepared,
                           const T* b, int64_t M, int64_t N, int64_t K, int64_t ldy = 0) {
  if (ldy == 0) ldy = N;
  if constexpr (std::is_same_v<T, float>)
    if (prepared) return clip::linear_forward(y, x, *prepared, b, M, K, ldy);
  if (ldy == N) return linear_forward(y, x, W, b, M, N, K);
#pragma omp parallel for if (M * N >= (int64_t(1) << 17))
  for (int64_t r = 0; r < M; ++r) std::copy_n(b, N, y + r * ldy);
  gemm<T>(false, true, M, N, K, T(1), x, K, W, K, T(1), y, ldy);
}
// y = residual + x W^T + b (y may alias residual), likewise.
template <typename T>
void residual_linear_maybe_prepared(T* y, const T* residual, const T* x, const T* W,
                                    const PackedWeight* prepared, const T* b, int64_t M,
                                    int64_t N, int64_t K) {
  if constexpr (std::is_same_v<T, float>)
    if (prepared) {
      if (y != residual) std::copy_n(residual, M * N, y);
      return clip::linear_forward(y, x, *prepared, b, M, 0, 0, /*accumulate=*/true);
    }
  linear_forward_residual(y, residual, x, W, b, M, N, K);
}
}  // namespace

// Hands the hook a tower's rows [rows, D] as [B, L, D]: packed texts are spread out, the
// positions after a text's end token left 0.
template <typename T>
void ClipNetwork<T>::emit_rows(const ActivationHook* hook, const std::string& name,
                               const TowerActs& a, const T* x, int64_t B, int64_t D) const {
  if (!hook || !*hook) return;
  if constexpr (std::is_same_v<T, float>) {
    if (a.seq_off.empty()) return (*hook)(name, x, {B, a.rows / B, D});
    const int64_t L = a.L_used;
    std::vector<float> spread(size_t(B * L * D), 0.f);
    for (int64_t b = 0; b < B; ++b)
      std::copy(x + a.seq_off[size_t(b)] * D, x + a.seq_off[size_t(b + 1)] * D,
                spread.begin() + b * L * D);
    (*hook)(name, spread.data(), {B, L, D});
  }
}

template <typename T>
void ClipNetwork<T>::emit(const ActivationHook* hook, const std::string& name, const T* x,
                          std::vector<int64_t> shape) const {
  if constexpr (std::is_same_v<T, float>)
    if (hook && *hook) (*hook)(name, x, shape);
}

template <typename T>
void ClipNetwork<T>::transformer_forward(TowerActs& a, const TowerShape& s,
                                         const std::vector<BlockWeights>& blocks,
                                         const std::vector<PreparedBlock>& prepared, const T* x,
                                         int64_t B, const ActivationHook* hook,
                                         const std::string& hook_prefix) {
  const size_t n = blocks.size();
  if (n == 0) {
    gather_pooled(a.pooled, x, a.pool_row, s.D);
    return;
  }
  auto prep = [&](size_t l) { return prepared.empty() ? nullptr : &prepared[l]; };
  auto input = [&](size_t l) { return l == 0 ? x : a.layers[l - 1].res2; };
  const bool hooked = hook && *hook;
  for (size_t l = 0; l + 1 < n; ++l) {
    block_forward(a, s, blocks[l], prep(l), l, input(l), B);
    emit_rows(hook, hook_prefix + "block." + std::to_string(l), a, a.layers[l].res2, B, s.D);
  }
  if (hooked) {  // every row of the last block too, so that all of its output can be seen
    block_forward(a, s, blocks[n - 1], prep(n - 1), n - 1, input(n - 1), B);
    emit_rows(hook, hook_prefix + "block." + std::to_string(n - 1), a, a.layers[n - 1].res2, B,
              s.D);
    gather_pooled(a.pooled, a.layers[n - 1].res2, a.pool_row, s.D);
  } else {
    last_block_forward(a, s, blocks[n - 1], prep(n - 1), input(n - 1), B);
  }
}

// Only the pooled row of each batch element leaves the last block, and a block mixes rows only
// through attention's keys and values. So the last block computes ln_1 and k, v for all rows,
// and q, attention, out_proj, ln_2 and the MLP for the pooled rows only (B instead of B*L rows:
// for a 4-layer tower a fifth of the work; ViT-B/32: 1 of 50 rows, ~7 % of the tower). Its
// activations use the first B rows of the layer's buffers (ln_1 and qkv: all rows); q, ln_1
// and the residual stream of the pooled rows go to pool_q / pool_ln1 / pool_res.
template <typename T>
void ClipNetwork<T>::last_block_forward(TowerActs& a, const TowerShape& s, const BlockWeights& w,
                                        const PreparedBlock* prep, const T* in, int64_t B) {
  const int64_t BL = a.rows, D = s.D, F = s.F;
  const double eps = config_.layer_norm_eps;
  LayerActs& A = a.layers.back();
  const int32_t* idx = a.pool_index.data();
  const int64_t* off = a.seq_off.empty() ? nullptr : a.seq_off.data();
  layernorm_forward(A.ln1, A.ln1_mean, A.ln1_rstd, in, w.ln1_w, w.ln1_b, BL, D, eps);
  // k | v columns of qkv for every row: qkv[:, D:3D] = ln1 @ in_w[D:3D]^T + in_b[D:3D]
  linear_maybe_prepared(A.qkv + D, A.ln1, w.in_w + D * D, prep ? &prep->kv : nullptr, w.in_b + D,
                        BL, 2 * D, D, 3 * D);
  // q for the pooled rows
  gather_pooled(a.pool_ln1, A.ln1, a.pool_row, D);
  linear_maybe_prepared(a.pool_q, a.pool_ln1, w.in_w, prep ? &prep->q : nullptr, w.in_b, B, D, D);
  attention_pooled_forward(A.attn, A.probs, a.pool_q, A.qkv, idx, off, B, s.L, D, s.H, s.causal);
  T* res1 = a.pool_res;
  gather_pooled(res1, in, a.pool_row, D);
  residual_linear_maybe_prepared(res1, res1, A.attn, w.out_w, prep ? &prep->out : nullptr,
                                 w.out_b, B, D, D);
  layernorm_forward(A.ln2, A.ln2_mean, A.ln2_rstd, res1, w.ln2_w, w.ln2_b, B, D, eps);
  linear_maybe_prepared(A.h, A.ln2, w.fc_w, prep ? &prep->fc : nullptr, w.fc_b, B, F, D);
  activation_forward(act_, A.a, A.h, B * F);
  residual_linear_maybe_prepared(a.pooled, res1, A.a, w.proj_w, prep ? &prep->proj : nullptr,
                                 w.proj_b, B, D, F);
}

// a.dpooled holds d(pooled rows) on entry (it is used as scratch); a.g1 = d(block input), all
// rows, on exit.
template <typename T>
void ClipNetwork<T>::last_block_backward(TowerActs& a, const TowerShape& s,
                                           const BlockParams& p, const T* in, int64_t B) {
  const int64_t BL = a.rows, D = s.D, F = s.F;
  const T* P = params_.data();
  T* G = grads_.data();
  LayerActs& A = a.layers.back();
  const int32_t* idx = a.pool_index.data();
  const int64_t* off = a.seq_off.empty() ? nullptr : a.seq_off.data();
  constexpr bool overwrite = false;
  T* g = a.dpooled;  // d res2, then d res1 (pooled rows)
  linear_backward(a.da, G + p.proj_w, G + p.proj_b, g, A.a, P + p.proj_w, B, D, F, overwrite);
  activation_backward(act_, a.da, a.da, A.h, B * F, overwrite);
  linear_backward(a.dln, G + p.fc_w, G + p.fc_b, a.da, A.ln2, P + p.fc_w, B, F, D, overwrite);
  layernorm_backward(g, G + p.ln2_w, G + p.ln2_b, a.dln, a.pool_res, P + p.ln2_w, A.ln2_mean,
                     A.ln2_rstd, B, D);
  linear_backward(a.dattn, G + p.out_w, G + p.out_b, g, A.attn, P + p.out_w, B, D, D, overwrite);
  T* dq = a.pool_dq;
  attention_pooled_backward(dq, a.dqkv, a.dattn, a.pool_q, A.qkv, A.probs, idx, off, B, s.L, D,
                            s.H, s.causal, overwrite);
  // in_proj, k | v part (all rows): dW[D:3D] += dkv^T ln1; db[D:3D] += sums; dln1 = dkv W[D:3D]
  gemm<T>(true, false, 2 * D, D, BL, T(1), a.dqkv + D, 3 * D, A.ln1, D, T(1),
          G + p.in_w + D * D, D);
  bias_backward(G + p.in_b + D, a.dqkv + D, BL, 2 * D, 3 * D);
  gemm<T>(false, false, BL, D, 2 * D, T(1), a.dqkv + D, 3 * D, P + p.in_w + D * D, D, T(0),
          a.dln, D);
  // q part (pooled rows): dW[0:D] += dq^T ln1_pooled; dln1[pooled] += dq W[0:D]
  T* dlnq = a.dattn;  // d attn is consumed
  linear_backward(dlnq, G + p.in_w, G + p.in_b, dq, a.pool_ln1, P + p.in_w, B, D, D, overwrite);
  scatter_add_pooled(a.dln, dlnq, a.pool_row, D);
  // d in = residual (pooled rows) + ln_1 backward (all rows)
  std::fill_n(a.g1, BL * D, T(0));
  scatter_add_pooled(a.g1, g, a.pool_row, D);
  layernorm_backward(a.g1, G + p.ln1_w, G + p.ln1_b, a.dln, in, P + p.ln1_w, A.ln1_mean,
                     A.ln1_rstd, BL, D);
}

template <typename T>
void ClipNetwork<T>::block_forward(TowerActs& a, const TowerShape& s, const BlockWeights& w,
                                   const PreparedBlock* prep, size_t l, const T* in, int64_t B) {
  const int64_t BL = a.rows, D = s.D, F = s.F;
  const double eps = config_.layer_norm_eps;
  LayerActs& A = a.layers[l];
  layernorm_forward(A.ln1, A.ln1_mean, A.ln1_rstd, in, w.ln1_w, w.ln1_b, BL, D, eps);
  if (prep) {  // q and k | v prepared apart (see PreparedBlock)
    linear_maybe_prepared(A.qkv, A.ln1, w.in_w, &prep->q, w.in_b, BL, D, D, 3 * D);
    linear_maybe_prepared(A.qkv + D, A.ln1, w.in_w + D * D, &prep->kv, w.in_b + D, BL, 2 * D, D,
                          3 * D);
  } else {
    linear_forward(A.qkv, A.ln1, w.in_w, w.in_b, BL, 3 * D, D);
  }
  attention_fwd(a, s, A, B);
  residual_linear_maybe_prepared(A.res1, in, A.attn, w.out_w, prep ? &prep->out : nullptr,
                                 w.out_b, BL, D, D);
  layernorm_forward(A.ln2, A.ln2_mean, A.ln2_rstd, A.res1, w.ln2_w, w.ln2_b, BL, D, eps);
  linear_maybe_prepared(A.h, A.ln2, w.fc_w, prep ? &prep->fc : nullptr, w.fc_b, BL, F, D);
  activation_forward(act_, A.a, A.h, BL * F);
  residual_linear_maybe_prepared(A.res2, A.res1, A.a, w.proj_w, prep ? &prep->proj : nullptr,
                                 w.proj_b, BL, D, F);
}

template <typename T>
void ClipNetwork<T>::transformer_backward(TowerActs& a, const TowerShape& s,
                                          const std::vector<BlockParams>& blocks,
                                          const std::vector<BlockWeights>& weights, const T* x,
                                          int64_t B) {
  const int64_t BL = a.rows, D = s.D, F = s.F;
  const T* P = params_.data();
  T* G = grads_.data();
  // a.g1 is the running gradient of the residual stream: d(block output) on entry to a block,
  // d(block input) on exit. Every residual branch's backward ADDS its input gradient to it
  // (layernorm_backward accumulates), so the residual path needs no copy; the scratch
  // buffers are overwritten (accumulate = false), so they need no zeroing.
  constexpr bool overwrite = false;
  const size_t n = blocks.size();
  if (n == 0) {
    std::fill_n(a.g1, BL * D, T(0));
    scatter_add_pooled(a.g1, a.dpooled, a.pool_row, D);
    return;
  }
  last_block_backward(a, s, blocks[n - 1], n == 1 ? x : a.layers[n - 2].res2, B);
  for (size_t li = n - 1; li-- > 0;) {
    const BlockParams& p = blocks[li];
    LayerActs& A = a.layers[li];
    const T* in = li == 0 ? x : a.layers[li - 1].res2;
    // With recomputation the shared internals hold a later block's values: recompute this
    // block's from its input (its res2 is rewritten with identical values).
    if (a.recompute) block_forward(a, s, weights[li], nullptr, li, in, B);
    // res2 = res1 + c_proj(act(c_fc(ln_2(res1))))
    linear_backward(a.da, G + p.proj_w, G + p.proj_b, a.g1, A.a, P + p.proj_w, BL, D, F, overwrite);
    activation_backward(act_, a.da, a.da, A.h, BL * F, overwrite);  // in place: d(c_fc output)
    linear_backward(a.dln, G + p.fc_w, G + p.fc_b, a.da, A.ln2, P + p.fc_w, BL, F, D, overwrite);
    layernorm_backward(a.g1, G + p.ln2_w, G + p.ln2_b, a.dln, A.res1, P + p.ln2_w, A.ln2_mean,
                       A.ln2_rstd, BL, D);  // g1 = d res1
    // res1 = in + out_proj(attention(in_proj(ln_1(in))))
    linear_backward(a.dattn, G + p.out_w, G + p.out_b, a.g1, A.attn, P + p.out_w, BL, D, D, overwrite);
    if (a.seq_off.empty())
      attention_backward(a.dqkv, a.dattn, A.qkv, A.probs, B, s.L, D, s.H, s.causal, overwrite);
    else
      attention_backward_packed(a.dqkv, a.dattn, A.qkv, A.probs, a.seq_off.data(), B, D, s.H,
                                s.causal, overwrite);
    linear_backward(a.dln, G + p.in_w, G + p.in_b, a.dqkv, A.ln1, P + p.in_w, BL, 3 * D, D, overwrite);
    layernorm_backward(a.g1, G + p.ln1_w, G + p.ln1_b, a.dln, in, P + p.ln1_w, A.ln1_mean,
                       A.ln1_rstd, BL, D);  // g1 = d in
  }
}

// ------------------------------------------------------------------ towers

template <typename T>
void ClipNetwork<T>::forward_image(const float* pixels, int64_t B, T* features,
                                   bool update_running_stats) {
  if (B <= 0) throw Error("training: forward_image needs at least one image");
  if (inference_only()) throw Error("forward_image: an inference network has no gradients (use encode_images)");
  if (resnet_) {
    resnet_->forward(pixels, B, features, update_running_stats);
    return;
  }
  plan(vacts_, vshape_, B, true);
  image_forward(vacts_, pixels, B, features, nullptr);
}

template <typename T>
void ClipNetwork<T>::encode_images(const float* pixels, int64_t B, float* features,
                                   const ActivationHook* hook) {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error("encode_images: inference computes in float");
  } else {
    if (B <= 0) return;
    if (!has_image_tower_)
      throw Error("encode_images: this network's ResNet image tower is loaded by model/resnet.h");
    if (resnet_ && resnet_->prepared()) {  // batch norm folded, as a loaded checkpoint runs
      resnet_->encode(pixels, B, features);
      return;
    }
    if (resnet_) {  // evaluation mode: the running statistics
      const bool was_training = resnet_->training();
      resnet_->set_training(false);
      resnet_->forward(pixels, B, features, /*update_running_stats=*/false);
      resnet_->set_training(was_training);
      return;
    }
    plan_inference(vinf_, vshape_, B, true);
    image_forward(vinf_, pixels, B, features, hook);
  }
}

template <typename T>
void ClipNetwork<T>::image_forward(TowerActs& a, const float* pixels, int64_t B, T* features,
                                   const ActivationHook* hook) {
  a.B_used = B;
  const TowerShape& s = vshape_;
  const int64_t W = s.D, E = config_.embed_dim, cols = 3 * patch_ * patch_;
  const double eps = config_.layer_norm_eps;
  patchify(a.patches, pixels, B, int64_t(config_.vision.image_size), patch_);
  linear_maybe_prepared<T>(a.ptok, a.patches, vw_.conv,
                           a.inference && vconv_prep_ ? &*vconv_prep_ : nullptr, nullptr, B * grid2_,
                           W, cols);
  vit_embed_forward(a.x0, a.ptok, vw_.cls, vw_.pos, B, grid2_, W);
  emit(hook, "vision.embed", a.x0, {B, s.L, W});
  layernorm_forward(a.lnpre, a.lnpre_mean, a.lnpre_rstd, a.x0, vw_.ln_pre_w, vw_.ln_pre_b,
                    B * s.L, W, eps);
  emit(hook, "vision.ln_pre", a.lnpre, {B, s.L, W});
  a.rows = B * s.L;
  a.seq_off.clear();  // uniform sequences of L rows
  a.pool_index.assign(size_t(B), 0);  // the class token
  a.pool_row.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) a.pool_row[size_t(b)] = b * s.L;
  const std::vector<PreparedBlock> none;
  transformer_forward(a, s, vweights_, a.inference ? vprep_ : none, a.lnpre, B, hook,
                      "vision.");  // -> a.pooled
  layernorm_forward(a.lnfin, a.lnfin_mean, a.lnfin_rstd, a.pooled, vw_.ln_post_w,
                    vw_.ln_post_b, B, W, eps);
  emit(hook, "vision.ln_post", a.lnfin, {B, W});
  project_forward(features, a.lnfin, vw_.proj, B, E, W);
  emit(hook, "vision.output", features, {B, E});
}

template <typename T>
void ClipNetwork<T>::backward_image(const T* d_features) {
  if (resnet_) {
    resnet_->backward(d_features);
    return;
  }
  TowerActs& a = vacts_;
  const int64_t B = a.B_used;
  if (B == 0) throw Error("training: backward_image before forward_image");
  const TowerShape& s = vshape_;
  const int64_t W = s.D, cols = 3 * patch_ * patch_, BL = B * s.L;
  const T* P = params_.data();
  T* G = grads_.data();
  pooled_backward(a, s, d_features, v_proj_, v_lnpost_w_, v_lnpost_b_, vblocks_, vweights_,
                  a.lnpre);
  std::fill_n(a.dln, BL * W, T(0));
  layernorm_backward(a.dln, G + v_lnpre_w_, G + v_lnpre_b_, a.g1, a.x0, P + v_lnpre_w_,
                     a.lnpre_mean, a.lnpre_rstd, BL, W);
  std::fill_n(a.dptok, B * grid2_ * W, T(0));
  vit_embed_backward(a.dptok, G + v_cls_, G + v_pos_, a.dln, B, grid2_, W);
  linear_backward<T>(nullptr, G + v_conv_, nullptr, a.dptok, a.patches, P + v_conv_,
                     B * grid2_, W, cols);
}

template <typename T>
void ClipNetwork<T>::forward_text(const int32_t* ids, int64_t B, T* features) {
  if (B <= 0) throw Error("training: forward_text needs at least one text");
  if (inference_only()) throw Error("forward_text: an inference network has no gradients (use encode_texts)");
  plan(tacts_, tshape_, B, false);
  text_forward(tacts_, ids, B, tshape_.L, features, nullptr);
}

template <typename T>
void ClipNetwork<T>::encode_texts(const int32_t* ids, int64_t B, int64_t context,
                                  float* features, const ActivationHook* hook) {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error("encode_texts: inference computes in float");
  } else {
    if (B <= 0) return;
    plan_inference(tinf_, tshape_, B, false);
    text_forward(tinf_, ids, B, context, features, hook);
  }
}

template <typename T>
void ClipNetwork<T>::text_forward(TowerActs& a, const int32_t* ids, int64_t B, int64_t ctx,
                                  T* features, const ActivationHook* hook) {
  if (ctx <= 0 || ctx > tshape_.L)
    throw Error("text encoder: token rows of length " + std::to_string(ctx) +
                " (the model's context length is " + std::to_string(tshape_.L) + ")");
  a.B_used = B;
  const int64_t D = tshape_.D, E = config_.embed_dim;
  a.pool_index.assign(size_t(B), 0);
  int64_t L = 1;
  for (int64_t b = 0; b < B; ++b) {
    int32_t best = 0;
    for (int64_t l = 0; l < ctx; ++l) {
      const int32_t id = ids[b * ctx + l];
      if (id < 0 || id >= config_.text.vocab_size)
        throw Error("text encoder: token id " + std::to_string(id) + " at row " +
                    std::to_string(b) + " is outside the vocabulary of " +
                    std::to_string(config_.text.vocab_size));
      if (id > ids[b * ctx + best]) best = int32_t(l);  // first maximum, as torch.argmax
    }
    a.pool_index[size_t(b)] = best;
    L = std::max(L, int64_t(best) + 1);
  }
  // Causal mask + pooling at argmax: nothing after a text's pooled token reaches its
  // features, so each text is computed only up to it, the texts packed back to back
  // (sequence b: rows seq_off[b] .. seq_off[b+1]-1, pooled at the last of them).
  TowerShape s = tshape_;
  s.L = L;  // the longest
  a.L_used = L;
  a.seq_off.assign(size_t(B + 1), 0);
  for (int64_t b = 0; b < B; ++b)
    a.seq_off[size_t(b + 1)] = a.seq_off[size_t(b)] + a.pool_index[size_t(b)] + 1;
  a.rows = a.seq_off[size_t(B)];
  a.ids.resize(size_t(a.rows));
  a.pool_row.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(ids + b * ctx, a.seq_off[size_t(b + 1)] - a.seq_off[size_t(b)],
                a.ids.begin() + a.seq_off[size_t(b)]);
    a.pool_row[size_t(b)] = a.seq_off[size_t(b + 1)] - 1;
  }
  token_embed_forward_packed(a.x0, a.ids.data(), tw_.tok, tw_.pos, a.seq_off.data(), B, D);
  emit_rows(hook, "text.embed", a, a.x0, B, D);
  const std::vector<PreparedBlock> none;
  transformer_forward(a, s, tweights_, a.inference ? tprep_ : none, a.x0, B, hook,
                      "text.");  // -> a.pooled
  // ln_final is row-wise, so applying it to the pooled rows only equals model.py's order.
  layernorm_forward(a.lnfin, a.lnfin_mean, a.lnfin_rstd, a.pooled, tw_.ln_final_w,
                    tw_.ln_final_b, B, D, double(config_.layer_norm_eps));
  emit(hook, "text.ln_final", a.lnfin, {B, D});
  project_forward(features, a.lnfin, tw_.proj, B, E, D);
  emit(hook, "text.output", features, {B, E});
}

template <typename T>
void ClipNetwork<T>::backward_text(const T* d_features) {
  TowerActs& a = tacts_;
  const int64_t B = a.B_used;
  if (B == 0) throw Error("training: backward_text before forward_text");
  TowerShape s = tshape_;
  s.L = a.L_used;
  pooled_backward(a, s, d_features, t_proj_, t_lnfin_w_, t_lnfin_b_, tblocks_, tweights_, a.x0);
  token_embed_backward_packed(grads_.data() + t_tok_, grads_.data() + t_pos_, a.g1, a.ids.data(),
                              a.seq_off.data(), B, s.D);
}

// Both towers' head, backwards: the projection, the final LayerNorm over the pooled rows, then
// the blocks (x: the first block's input); d(features) -> d(input of block 0) in a.g1.
template <typename T>
void ClipNetwork<T>::pooled_backward(TowerActs& a, const TowerShape& s, const T* d_features,
                                     size_t proj, size_t ln_w, size_t ln_b,
                                     const std::vector<BlockParams>& blocks,
                                     const std::vector<BlockWeights>& weights, const T* x) {
  const int64_t B = a.B_used, D = s.D, E = config_.embed_dim;
  const T* P = params_.data();
  T* G = grads_.data();
  std::fill_n(a.dlnfin, B * D, T(0));
  project_backward(a.dlnfin, G + proj, d_features, a.lnfin, P + proj, B, E, D);
  std::fill_n(a.dpooled, B * D, T(0));
  layernorm_backward(a.dpooled, G + ln_w, G + ln_b, a.dlnfin, a.pooled, P + ln_w, a.lnfin_mean,
                     a.lnfin_rstd, B, D);
  transformer_backward(a, s, blocks, weights, x, B);  // a.dpooled -> a.g1
}

template class ClipNetwork<float>;
template class ClipNetwork<double>;

}  // namespace clip::nn
