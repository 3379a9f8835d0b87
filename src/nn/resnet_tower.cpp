#include "nn/resnet_tower.h"

#include <algorithm>
#include <type_traits>
#include <map>
#include <memory>
#include <chrono>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "backend/matmul.h"

namespace clip::nn {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// g[i] = y[i] > 0 ? g[i] : 0 (ReLU backward in place, from the ReLU's output).
template <typename T>
void relu_mask(T* g, const T* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 17))
  for (int64_t i = 0; i < n; ++i)
    if (!(y[i] > T(0))) g[i] = T(0);
}

template <typename T>
void zero(T* p, int64_t n) {
  std::fill_n(p, n, T(0));
}

}  // namespace

template <typename T>
size_t ResNetTower<T>::add_param(const std::string& name, std::vector<int64_t> shape) {
  return append_param(entries_, index_, total_, name, std::move(shape), Tower::Image);
}

template <typename T>
typename ResNetTower<T>::Unit ResNetTower<T>::add_unit(const std::string& conv, const std::string& bn,
                                                       int64_t in, int64_t out, int64_t k,
                                                       int64_t stride, int64_t pad, int64_t H,
                                                       int64_t W) {
  Unit u;
  u.id = units_++;
  u.conv_name = conv;
  u.bn_name = bn;
  u.s = ConvShape{in, out, k, stride, pad};
  u.H = H;
  u.W = W;
  u.Ho = conv_out_size(H, k, stride, pad);
  u.Wo = conv_out_size(W, k, stride, pad);
  if (u.Ho <= 0 || u.Wo <= 0)
    throw Error("ModifiedResNet: image_size " + std::to_string(S_) + " is too small for " + conv);
  u.w = add_param(conv + ".weight", {out, in, k, k});
  u.gamma = add_param(bn + ".weight", {out});
  u.beta = add_param(bn + ".bias", {out});
  BatchNormBuffers b;
  b.prefix = bn;
  b.channels = out;
  b.offset = stats_total_;
  stats_total_ += size_t(2 * out);
  u.bn = bns_.size();
  bns_.push_back(b);
  return u;
}

template <typename T>
ResNetTower<T>::ResNetTower(const VisionConfig& v, int64_t embed_dim, const std::string& prefix,
                            bool own_arenas)
    : prefix_(prefix), S_(v.image_size), width_(v.width), embed_(embed_dim), layers_(v.resnet_layers) {
  if (layers_.size() != 4)
    throw Error("a ModifiedResNet needs four stage depths (resnet_layers), got " +
                std::to_string(layers_.size()));
  for (int l : layers_)
    if (l <= 0) throw Error("ModifiedResNet: every stage needs at least one block");
  if (width_ < 2 || width_ % 2) throw Error("ModifiedResNet: the width must be even and >= 2");
  if (embed_ <= 0 || S_ <= 0) throw Error("ModifiedResNet: invalid configuration");
  C4_ = width_ * 32;
  heads_ = v.heads > 0 ? v.heads : C4_ / 64;
  if (heads_ <= 0 || C4_ % heads_ != 0)
    throw Error("ModifiedResNet: attention-pool heads " + std::to_string(heads_) + " must divide " +
                std::to_string(C4_));
  const std::string& p = prefix_;
  const int64_t half = width_ / 2;
  // The stem.
  stem1_ = add_unit(p + "conv1", p + "bn1", 3, half, 3, 2, 1, S_, S_);
  stem2_ = add_unit(p + "conv2", p + "bn2", half, half, 3, 1, 1, stem1_.Ho, stem1_.Wo);
  stem3_ = add_unit(p + "conv3", p + "bn3", half, width_, 3, 1, 1, stem2_.Ho, stem2_.Wo);
  int64_t H = stem3_.Ho / 2, W = stem3_.Wo / 2;
  if (H <= 0 || W <= 0) throw Error("ModifiedResNet: image_size " + std::to_string(S_) + " is too small");
  // The stages.
  int64_t inplanes = width_;
  for (int l = 0; l < 4; ++l) {
    const int64_t planes = width_ << l;
    for (int bi = 0; bi < layers_[size_t(l)]; ++bi) {
      Block b;
      b.inplanes = inplanes;
      b.planes = planes;
      b.stride = (l > 0 && bi == 0) ? 2 : 1;
      b.H = H;
      b.W = W;
      b.Hp = H / b.stride;
      b.Wp = W / b.stride;
      if (b.Hp <= 0 || b.Wp <= 0)
        throw Error("ModifiedResNet: image_size " + std::to_string(S_) + " is too small");
      const std::string q = p + "layer" + std::to_string(l + 1) + "." + std::to_string(bi) + ".";
      b.c1 = add_unit(q + "conv1", q + "bn1", inplanes, planes, 1, 1, 0, H, W);
      b.c2 = add_unit(q + "conv2", q + "bn2", planes, planes, 3, 1, 1, H, W);
      b.c3 = add_unit(q + "conv3", q + "bn3", planes, planes * 4, 1, 1, 0, b.Hp, b.Wp);
      b.has_ds = b.stride > 1 || inplanes != planes * 4;
      if (b.has_ds)
        b.ds = add_unit(q + "downsample.0", q + "downsample.1", inplanes, planes * 4, 1, 1, 0,
                        b.Hp, b.Wp);
      blocks_.push_back(b);
      inplanes = planes * 4;
      H = b.Hp;
      W = b.Wp;
    }
  }
  // The attention pool: its positional embedding has (image_size / 32)^2 + 1 rows.
  const int64_t spatial = S_ / 32;
  if (H != spatial || W != spatial)
    throw Error("ModifiedResNet: image_size " + std::to_string(S_) + " gives a " + std::to_string(H) +
                "x" + std::to_string(W) + " final feature map, but the attention pool expects " +
                std::to_string(spatial) + "x" + std::to_string(spatial) + " (image_size / 32)");
  HW_ = H * W;
  pos_ = add_param(p + "attnpool.positional_embedding", {HW_ + 1, C4_});
  k_w_ = add_param(p + "attnpool.k_proj.weight", {C4_, C4_});
  k_b_ = add_param(p + "attnpool.k_proj.bias", {C4_});
  q_w_ = add_param(p + "attnpool.q_proj.weight", {C4_, C4_});
  q_b_ = add_param(p + "attnpool.q_proj.bias", {C4_});
  v_w_ = add_param(p + "attnpool.v_proj.weight", {C4_, C4_});
  v_b_ = add_param(p + "attnpool.v_proj.bias", {C4_});
  c_w_ = add_param(p + "attnpool.c_proj.weight", {embed_, C4_});
  c_b_ = add_param(p + "attnpool.c_proj.bias", {embed_});

  if (own_arenas) {
    own_params_.assign(total_, T(0));
    own_grads_.assign(total_, T(0));
    P_ = own_params_.data();
    G_ = own_grads_.data();
  }
  stats_.assign(stats_total_, T(0));
  for (const auto& b : bns_) std::fill_n(stats_.begin() + long(b.offset + b.channels), b.channels, T(1));
}

template <typename T>
const ParamEntry& ResNetTower<T>::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("training: the ResNet tower has no parameter named '" + name + "'");
  return entries_[it->second];
}

template <typename T>
void ResNetTower<T>::bind(T* params, T* grads) {
  if ((params == nullptr) != (grads == nullptr))
    throw Error("training: bind() needs both arenas or neither");
  if (!params && own_params_.empty()) {  // built without arenas: make its own now
    own_params_.assign(total_, T(0));
    own_grads_.assign(total_, T(0));
  }
  P_ = params ? params : own_params_.data();
  G_ = grads ? grads : own_grads_.data();
}

template <typename T>
void ResNetTower<T>::zero_grad() {
  std::fill_n(G_, total_, T(0));
}

template <typename T>
void ResNetTower<T>::init_openai(Rng& rng) {
  const double attn_std = 1.0 / std::sqrt(double(C4_));
  for (const auto& e : entries_) {
    T* dst = P_ + e.offset;
    const std::string& n = e.name;
    if (e.shape.size() == 4) {  // convolution: kaiming_uniform(a = sqrt 5) = U(+-1/sqrt(fan_in))
      const double bound = 1.0 / std::sqrt(double(e.shape[1] * e.shape[2] * e.shape[3]));
      for (size_t i = 0; i < e.numel; ++i) dst[i] = T(bound * (2.0 * rng.uniform() - 1.0));
    } else if (ends_with(n, "attnpool.positional_embedding")) {
      for (size_t i = 0; i < e.numel; ++i) dst[i] = T(attn_std * rng.normal());
    } else if (ends_with(n, "_proj.weight")) {  // initialize_parameters: N(0, in_features^-1/2)
      for (size_t i = 0; i < e.numel; ++i) dst[i] = T(attn_std * rng.normal());
    } else if (ends_with(n, "_proj.bias")) {  // nn.Linear's default bias
      for (size_t i = 0; i < e.numel; ++i) dst[i] = T(attn_std * (2.0 * rng.uniform() - 1.0));
    } else if (ends_with(n, ".bias")) {  // batch norm
      std::fill_n(dst, e.numel, T(0));
    } else {  // batch norm weight: 1, zero for each Bottleneck's bn3
      const bool bottleneck_bn3 = n.find(prefix_ + "layer") == 0 && ends_with(n, ".bn3.weight");
      std::fill_n(dst, e.numel, T(bottleneck_bn3 ? 0 : 1));
    }
  }
  for (auto& b : bns_) {
    std::fill_n(stats_.begin() + long(b.offset), b.channels, T(0));
    std::fill_n(stats_.begin() + long(b.offset + b.channels), b.channels, T(1));
    b.num_batches_tracked = 0;
  }
}

template <typename T>
void ResNetTower<T>::load(const std::map<std::string, Tensor>& tensors) {
  auto copy = [&](const std::string& name, const std::vector<int64_t>& shape, T* dst) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw Error("training: checkpoint lacks '" + name + "'");
    const Tensor& t = it->second;
    if (t.shape != shape)
      throw Error("training: '" + name + "' has shape " + t.shape_str() + ", the model expects " +
                  shape_str(shape));
    const Tensor f = t.dtype == DType::F32 ? t : t.to_f32();
    const float* src = f.f32();
    for (int64_t i = 0; i < f.numel(); ++i) dst[i] = T(src[i]);
  };
  for (const auto& e : entries_) copy(e.name, e.shape, P_ + e.offset);
  for (size_t i = 0; i < bns_.size(); ++i) {
    auto& b = bns_[i];
    copy(b.prefix + ".running_mean", {b.channels}, running_mean(i));
    copy(b.prefix + ".running_var", {b.channels}, running_var(i));
    b.num_batches_tracked = 0;
    auto it = tensors.find(b.prefix + ".num_batches_tracked");
    if (it != tensors.end() && it->second.numel() == 1) {
      const Tensor& t = it->second;
      if (t.dtype == DType::I64) b.num_batches_tracked = *t.ptr<int64_t>();
      else if (t.dtype == DType::I32) b.num_batches_tracked = *t.ptr<int32_t>();
      else b.num_batches_tracked = int64_t(std::llround(*t.to_f32().f32()));
    }
  }
}

template <typename T>
std::map<std::string, Tensor> ResNetTower<T>::state_dict() const {
  std::map<std::string, Tensor> out;
  auto put = [&](const std::string& name, const std::vector<int64_t>& shape, const T* src) {
    Tensor t = Tensor::empty(shape, DType::F32);
    float* dst = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) dst[i] = float(src[i]);
    out.emplace(name, std::move(t));
  };
  for (const auto& e : entries_) put(e.name, e.shape, P_ + e.offset);
  for (const auto& b : bns_) {
    put(b.prefix + ".running_mean", {b.channels}, stats_.data() + b.offset);
    put(b.prefix + ".running_var", {b.channels}, stats_.data() + b.offset + b.channels);
    Tensor n = Tensor::empty({}, DType::I64);
    *n.ptr<int64_t>() = b.num_batches_tracked;
    out.emplace(b.prefix + ".num_batches_tracked", std::move(n));
  }
  return out;
}

// ------------------------------------------------------------------ activation planning

template <typename T>
void ResNetTower<T>::plan(int64_t B) {
  if (planned_B_ >= B) return;
  std::vector<std::pair<T**, int64_t>> bufs;
  int64_t biggest = 0;
  auto act = [&](T** p, int64_t n) {
    bufs.push_back({p, n});
    biggest = std::max(biggest, n);
  };
  auto unit = [&](Unit& u) {
    act(&u.c, B * u.Ho * u.Wo * u.s.out_channels);
    bufs.push_back({&u.mean, u.s.out_channels});
    bufs.push_back({&u.rstd, u.s.out_channels});
  };
  bufs.push_back({&x0_, B * S_ * S_ * 3});
  unit(stem1_);
  act(&sa1_, B * stem1_.Ho * stem1_.Wo * stem1_.s.out_channels);
  unit(stem2_);
  act(&sa2_, B * stem2_.Ho * stem2_.Wo * stem2_.s.out_channels);
  unit(stem3_);
  act(&sa3_, B * stem3_.Ho * stem3_.Wo * stem3_.s.out_channels);
  act(&stem_out_, B * (stem3_.Ho / 2) * (stem3_.Wo / 2) * width_);
  for (auto& b : blocks_) {
    unit(b.c1);
    act(&b.a1, B * b.H * b.W * b.planes);
    unit(b.c2);
    act(&b.a2, B * b.H * b.W * b.planes);
    if (b.stride > 1) act(&b.p2, B * b.Hp * b.Wp * b.planes);
    unit(b.c3);
    if (b.has_ds) {
      if (b.stride > 1) act(&b.pd, B * b.Hp * b.Wp * b.inplanes);
      unit(b.ds);
    }
    act(&b.out, B * b.Hp * b.Wp * b.planes * 4);
  }
  const int64_t L = HW_ + 1;
  bufs.insert(bufs.end(), {{&ap_.tokens, B * L * C4_}, {&ap_.q, B * C4_}, {&ap_.k, B * L * C4_},
                           {&ap_.v, B * L * C4_}, {&ap_.probs, B * heads_ * L}, {&ap_.o, B * C4_},
                           {&ap_scratch_, attnpool_scratch_size(B, HW_, C4_)}});
  for (T** g : {&gA_, &gB_, &s1_, &s2_, &s3_}) bufs.push_back({g, biggest});
  int64_t total = 0;
  for (auto& [p, n] : bufs) total += n;
  arena_.clear();
  arena_.shrink_to_fit();
  arena_.assign(size_t(total), T(0));
  T* cur = arena_.data();
  for (auto& [p, n] : bufs) {
    *p = cur;
    cur += n;
  }
  planned_B_ = B;
}

// ------------------------------------------------------------------ forward / backward

template <typename T>
void ResNetTower<T>::unit_forward(const Unit& u, const T* in, int64_t B, T* y, bool relu, bool update) {
  conv2d_forward(u.c, in, P_ + u.w, B, u.H, u.W, u.s);
  const int64_t M = B * u.Ho * u.Wo, C = u.s.out_channels;
  if (training_) {
    batchnorm_train_forward(y, u.mean, u.rstd, u.c, P_ + u.gamma, P_ + u.beta, M, C, eps_,
                            update ? running_mean(u.bn) : nullptr,
                            update ? running_var(u.bn) : nullptr, momentum_);
    if (update) ++bns_[u.bn].num_batches_tracked;
  } else {
    batchnorm_eval_forward(y, u.mean, u.rstd, u.c, P_ + u.gamma, P_ + u.beta, running_mean(u.bn),
                           running_var(u.bn), M, C, eps_);
  }
  if (relu) relu_forward(y, y, M * C);
}

template <typename T>
void ResNetTower<T>::unit_backward(const Unit& u, const T* in, const T* dy, T* din, int64_t B, T* dc) {
  const int64_t M = B * u.Ho * u.Wo, C = u.s.out_channels;
  zero(dc, M * C);
  batchnorm_backward(dc, G_ + u.gamma, G_ + u.beta, dy, u.c, P_ + u.gamma, u.mean, u.rstd, M, C,
                     fwd_training_);
  conv2d_backward(din, G_ + u.w, dc, in, P_ + u.w, B, u.H, u.W, u.s);
}

// ------------------------------------------------------------------ the walk

// The stages a walk reports as they complete: the stem, then each of the four stages.
constexpr const char* kStageNames[5] = {"stem", "layer1", "layer2", "layer3", "layer4"};

// Where a run puts the stem's and a block's activations.
template <typename T>
struct ResNetTower<T>::StemBuffers {
  T *x0, *y1, *y2, *y3, *out;
};
template <typename T>
struct ResNetTower<T>::BlockBuffers {
  T *a1, *a2, *p2, *pd, *ds, *out;
};

// A run provides, for a batch of B images:
//   StemBuffers stem_buffers();                  x0 (NHWC pixels), y1..y3 (the units), out (pooled)
//   BlockBuffers block_buffers(block, in);       a1, a2 (units), p2 (pooled branch), pd (pooled
//                                                shortcut), ds (projected shortcut), out
//   void unit(u, in, out, relu);                 out = [relu](bn(conv(in)))
//   void residual_unit(u, in, identity, out);    out = relu(bn(conv(in)) + identity)
//   void stage(i, x, h, w, c);                   stage i's output (NHWC) is complete
//   void attnpool(x, features);                  the attention-pooling head
template <typename T>
template <typename Run>
void ResNetTower<T>::walk(Run& run, const float* pixels, int64_t B, T* features) const {
  const auto s = run.stem_buffers();
  nchw_to_nhwc(s.x0, pixels, B, 3, S_, S_);
  run.unit(stem1_, s.x0, s.y1, true);
  run.unit(stem2_, s.y1, s.y2, true);
  run.unit(stem3_, s.y2, s.y3, true);
  avgpool_forward(s.out, s.y3, B, stem3_.Ho, stem3_.Wo, width_, 2);
  run.stage(0, s.out, stem3_.Ho / 2, stem3_.Wo / 2, width_);
  const T* x = s.out;
  size_t bi = 0;
  for (int l = 0; l < 4; ++l) {
    for (int k = 0; k < layers_[size_t(l)]; ++k, ++bi) {
      const Block& b = blocks_[bi];
      const auto o = run.block_buffers(b, x);
      run.unit(b.c1, x, o.a1, true);
      run.unit(b.c2, o.a1, o.a2, true);
      const T* branch = o.a2;
      if (b.stride > 1) {  // the anti-aliasing average pool after the 3x3 convolution
        avgpool_forward(o.p2, o.a2, B, b.H, b.W, b.planes, b.stride);
        branch = o.p2;
      }
      const T* identity = x;
      if (b.has_ds) {  // the shortcut: average pool, then the 1x1 projection
        if (b.stride > 1) {
          avgpool_forward(o.pd, x, B, b.H, b.W, b.inplanes, b.stride);
          identity = o.pd;
        }
        run.unit(b.ds, identity, o.ds, false);
        identity = o.ds;
      }
      run.residual_unit(b.c3, branch, identity, o.out);
      x = o.out;
    }
    const Block& last = blocks_[bi - 1];
    run.stage(l + 1, x, last.Hp, last.Wp, last.planes * 4);
  }
  run.attnpool(x, features);
}

// Training: each unit keeps its convolution's output and batch statistics, each activation
// its own planned buffer (backward() reads them by the same names).
template <typename T>
struct ResNetTower<T>::TrainingRun {
  ResNetTower& t;
  int64_t B;
  bool update;  // update the batch-norm running statistics

  StemBuffers stem_buffers() const { return {t.x0_, t.sa1_, t.sa2_, t.sa3_, t.stem_out_}; }
  BlockBuffers block_buffers(const Block& b, const T*) const {
    // The projected shortcut only feeds the sum: scratch (its unit keeps what backward needs).
    return {b.a1, b.a2, b.p2, b.pd, t.s1_, b.out};
  }
  void unit(const Unit& u, const T* in, T* out, bool relu) { t.unit_forward(u, in, B, out, relu, update); }
  void residual_unit(const Unit& u, const T* in, const T* identity, T* out) {
    t.unit_forward(u, in, B, out, false, update);
    add_relu_forward(out, out, identity, B * u.Ho * u.Wo * u.s.out_channels);
  }
  void stage(int, const T*, int64_t, int64_t, int64_t) {}
  void attnpool(const T* x, T* features) {
    attnpool_forward(features, t.ap_, x, t.pool_weights(), B, t.HW_, t.C4_, t.heads_, t.embed_);
  }
};

template <typename T>
void ResNetTower<T>::forward(const float* pixels, int64_t B, T* features, bool update_running_stats) {
  if (B <= 0) throw Error("training: the ResNet tower's forward needs at least one image");
  plan(B);
  B_used_ = B;
  fwd_training_ = training_;
  TrainingRun run{*this, B, training_ && update_running_stats};
  walk(run, pixels, B, features);
}

template <typename T>
void ResNetTower<T>::backward(const T* d_features) {
  const int64_t B = B_used_;
  if (B == 0) throw Error("training: the ResNet tower's backward before its forward");
  // Attention pool: d(last stage output) into gA_.
  const AttnPoolWeights<T> w = pool_weights();
  const AttnPoolGrads<T> g{G_ + pos_, G_ + q_w_, G_ + q_b_, G_ + k_w_, G_ + k_b_,
                           G_ + v_w_, G_ + v_b_, G_ + c_w_, G_ + c_b_};
  zero(gA_, B * HW_ * C4_);
  attnpool_backward(gA_, g, d_features, ap_, w, B, HW_, C4_, heads_, embed_, ap_scratch_);
  // Blocks, last to first: gA_ holds d(block output) on entry, d(block input) after the swap.
  for (size_t i = blocks_.size(); i-- > 0;) {
    Block& b = blocks_[i];
    const T* x = i == 0 ? stem_out_ : blocks_[i - 1].out;
    const int64_t n_out = B * b.Hp * b.Wp * b.planes * 4;
    relu_mask(gA_, b.out, n_out);  // d(bn3 output + shortcut)
    // Main branch.
    const T* in3 = b.stride > 1 ? b.p2 : b.a2;
    zero(s2_, B * b.Hp * b.Wp * b.planes);
    unit_backward(b.c3, in3, gA_, s2_, B, s1_);
    T* da2 = s2_;
    if (b.stride > 1) {
      zero(s3_, B * b.H * b.W * b.planes);
      avgpool_backward(s3_, s2_, B, b.H, b.W, b.planes, b.stride);
      da2 = s3_;
    }
    relu_mask(da2, b.a2, B * b.H * b.W * b.planes);
    T* da1 = da2 == s2_ ? s3_ : s2_;
    zero(da1, B * b.H * b.W * b.planes);
    unit_backward(b.c2, b.a1, da2, da1, B, s1_);
    relu_mask(da1, b.a1, B * b.H * b.W * b.planes);
    zero(gB_, B * b.H * b.W * b.inplanes);
    unit_backward(b.c1, x, da1, gB_, B, s1_);
    // Shortcut.
    if (b.has_ds) {
      if (b.stride > 1) {
        zero(s2_, B * b.Hp * b.Wp * b.inplanes);
        unit_backward(b.ds, b.pd, gA_, s2_, B, s1_);
        avgpool_backward(gB_, s2_, B, b.H, b.W, b.inplanes, b.stride);
      } else {
        unit_backward(b.ds, x, gA_, gB_, B, s1_);
      }
    } else {
      add_inplace(gB_, gA_, n_out);
    }
    std::swap(gA_, gB_);
  }
  // Stem: gA_ holds d(stem output).
  const int64_t n3 = B * stem3_.Ho * stem3_.Wo * width_;
  zero(s2_, n3);
  avgpool_backward(s2_, gA_, B, stem3_.Ho, stem3_.Wo, width_, 2);
  relu_mask(s2_, sa3_, n3);
  const int64_t n2 = B * stem2_.Ho * stem2_.Wo * stem2_.s.out_channels;
  zero(s3_, n2);
  unit_backward(stem3_, sa2_, s2_, s3_, B, s1_);
  relu_mask(s3_, sa2_, n2);
  const int64_t n1 = B * stem1_.Ho * stem1_.Wo * stem1_.s.out_channels;
  zero(s2_, n1);
  unit_backward(stem2_, sa1_, s3_, s2_, B, s1_);
  relu_mask(s2_, sa1_, n1);
  unit_backward(stem1_, x0_, s2_, nullptr, B, s1_);
}


// ------------------------------------------------------------------ inference

template <typename T>
void ResNetTower<T>::prepare(const TensorSource& tensor, Precision precision) {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error("only a float ResNet tower can be prepared for inference");
  } else {
    auto p = std::make_shared<Prepared>();
    p->units.resize(units_);
    auto fold = [&](const Unit& u) {
      const int64_t o = u.s.out_channels, i = u.s.in_channels, k = u.s.kernel;
      const conv::Conv2dShape shape{int(i), int(o), int(k), int(u.s.stride), int(u.s.padding)};
      p->units[u.id] = conv::fold_batch_norm(
          conv::make_conv_weights(shape, tensor(u.conv_name + ".weight", {o, i, k, k})),
          tensor(u.bn_name + ".weight", {o}), tensor(u.bn_name + ".bias", {o}),
          tensor(u.bn_name + ".running_mean", {o}), tensor(u.bn_name + ".running_var", {o}),
          float(eps_));
      conv::prepare_conv_products(p->units[u.id], precision);
    };
    for (const Unit* u : {&stem1_, &stem2_, &stem3_}) fold(*u);
    for (const Block& b : blocks_) {
      fold(b.c1);
      fold(b.c2);
      fold(b.c3);
      if (b.has_ds) fold(b.ds);
    }
    const std::string a = prefix_ + "attnpool.";
    const int64_t C = C4_, O = embed_;
    // Copied, so that the preparation does not depend on the source staying alive.
    const std::pair<const char*, std::vector<int64_t>> parts[] = {
        {"positional_embedding", {HW_ + 1, C}}, {"q_proj.weight", {C, C}}, {"q_proj.bias", {C}},
        {"k_proj.weight", {C, C}}, {"k_proj.bias", {C}}, {"v_proj.weight", {C, C}},
        {"v_proj.bias", {C}}, {"c_proj.weight", {O, C}}, {"c_proj.bias", {O}}};
    size_t total = 0, offsets[9];
    for (size_t i = 0; i < 9; ++i) {
      offsets[i] = total;
      size_t n = 1;
      for (int64_t d : parts[i].second) n *= size_t(d);
      total += n;
    }
    p->pool_storage.resize(total);
    for (size_t i = 0; i < 9; ++i) {
      const float* src = tensor(a + parts[i].first, parts[i].second);
      const size_t end = i + 1 < 9 ? offsets[i + 1] : total;
      std::copy(src, src + (end - offsets[i]), p->pool_storage.begin() + long(offsets[i]));
    }
    const float* q = p->pool_storage.data();
    p->pool = {q + offsets[0], q + offsets[1], q + offsets[2], q + offsets[3], q + offsets[4],
               q + offsets[5], q + offsets[6], q + offsets[7], q + offsets[8]};
    prepared_ = std::move(p);
  }
}

template <typename T>
void ResNetTower<T>::prepare() {
  if (!P_) throw Error("ResNetTower::prepare: the tower has no parameters bound");
  std::map<std::string, const T*> own;
  for (const auto& e : entries_) own[e.name] = P_ + e.offset;
  for (size_t i = 0; i < bns_.size(); ++i) {
    own[bns_[i].prefix + ".running_mean"] = stats_.data() + bns_[i].offset;
    own[bns_[i].prefix + ".running_var"] = stats_.data() + bns_[i].offset + bns_[i].channels;
  }
  if constexpr (std::is_same_v<T, float>)
    prepare([&own](const std::string& name, const std::vector<int64_t>&) { return own.at(name); });
  else
    throw Error("only a float ResNet tower can be prepared for inference");
}

namespace {
using InferenceClock = std::chrono::steady_clock;

// The attention pool for inference (model.py AttentionPool2d; C = 32 width, T = HW + 1 tokens):
// the query is the mean token's, keys and values all tokens'. Only one query per image, so
// instead of projecting every token's key, each head's query is taken through W_k once
// (u_h = q_h W_k,h: score_t = u_h . x_t, k_proj's bias adds the same q.b_k to every score and
// cancels in the softmax), and the values are projected after the weighted sum of the tokens
// (sum_t p_t (W_v x_t + b_v) = W_v (sum_t p_t x_t) + b_v): 2 C^2 multiply-adds per head and
// image instead of 2 T C^2. The training forward (attnpool_forward) projects every token, as
// its backward needs.
void attnpool_inference(float* out, const float* x, const AttnPoolWeights<float>& W, int64_t n,
                        int64_t T, int64_t E, int64_t heads, int64_t O, float* tok) {
  const int64_t hd = E / heads;
  // Tokens [n, T, E] (in tok); the mean is a sum then a division, as torch.mean.
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * (T - 1) * E;
    float* t = tok + b * T * E;
    for (int64_t c = 0; c < E; ++c) t[c] = 0.0f;
    for (int64_t i = 0; i < T - 1; ++i)
      for (int64_t c = 0; c < E; ++c) t[c] += xb[i * E + c];
    for (int64_t c = 0; c < E; ++c) t[c] = t[c] / float(T - 1) + W.pos[c];
    for (int64_t i = 1; i < T; ++i)
      for (int64_t c = 0; c < E; ++c) t[i * E + c] = xb[(i - 1) * E + c] + W.pos[i * E + c];
  }
  // q = (t0 Wq^T + bq) / sqrt(hd)   [n, E]
  std::vector<float> q(size_t(n * E)), u(size_t(n * heads * E)), p(size_t(n * heads * T)),
      xbar(size_t(n * heads * E)), o(size_t(n * E));
  conv::parallel_sgemm(n, E, E, tok, T * E, W.q_w, E, true, q.data(), E);
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < E; ++c) q[b * E + c] = (q[b * E + c] + W.q_b[c]) * scale;
  // u_h = q_h Wk_h  [n, heads, E]
#pragma omp parallel for schedule(static)
  for (int64_t hh = 0; hh < heads; ++hh)
    clip::sgemm(false, false, n, E, hd, 1.0f, q.data() + hh * hd, E, W.k_w + hh * hd * E, E, 0.0f,
                u.data() + hh * E, heads * E);
  // Scores, softmax over the tokens, and the attention-weighted token xbar_h = sum_t p_t x_t.
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    float* pb = p.data() + b * heads * T;
    const float* tb = tok + b * T * E;
    clip::sgemm(false, true, heads, T, E, 1.0f, u.data() + b * heads * E, E, tb, E, 0.0f, pb, T);
    for (int64_t hh = 0; hh < heads; ++hh) {
      float* row = pb + hh * T;
      float mx = row[0];
      for (int64_t t = 1; t < T; ++t) mx = std::max(mx, row[t]);
      float sum = 0.0f;
      for (int64_t t = 0; t < T; ++t) sum += (row[t] = std::exp(row[t] - mx));
      const float inv = 1.0f / sum;
      for (int64_t t = 0; t < T; ++t) row[t] *= inv;
    }
    clip::sgemm(false, false, heads, E, T, 1.0f, pb, T, tb, E, 0.0f, xbar.data() + b * heads * E, E);
  }
  // head output = Wv_h xbar_h + bv_h (the probabilities sum to one)   [n, E]
#pragma omp parallel for schedule(static)
  for (int64_t hh = 0; hh < heads; ++hh)
    clip::sgemm(false, true, n, hd, E, 1.0f, xbar.data() + hh * E, heads * E, W.v_w + hh * hd * E, E,
                0.0f, o.data() + hh * hd, E);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < E; ++c) o[b * E + c] += W.v_b[c];
  conv::parallel_sgemm(n, O, E, o.data(), E, W.c_w, E, true, out, O);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < O; ++c) out[b * O + c] += W.c_b[c];
}
}  // namespace

// Inference: the prepared units (batch norm folded into the convolutions, ReLU and the
// residual add fused), the activations in four buffers X, Y, T1, T2 of the largest
// activation's size, allocated per call (encode is const and may run on several threads).
// The block's input is X or Y; its units use T1, T2; its projected shortcut goes to the other
// of X / Y, and the last convolution adds itself in place onto the shortcut.
template <typename T>
template <typename F>
struct ResNetTower<T>::InferenceRun {
  const ResNetTower& t;
  const Prepared& prep;
  int64_t B;
  const StageHook& hook;
  StageTimes times;
  float *X, *Y, *T1, *T2;
  std::vector<float> nchw;  // the hook's copy
  InferenceClock::time_point clock = InferenceClock::now();

  StemBuffers stem_buffers() const { return {X, T1, T2, T1, X}; }
  BlockBuffers block_buffers(const Block& b, const float* in) const {
    float* cur = in == X ? X : Y;
    float* spare = in == X ? Y : X;
    // p2 overwrites a1 (dead once a2 exists), pd overwrites a2 (dead once pooled into p2).
    return {T1, T2, T1, T2, spare, b.has_ds ? spare : cur};
  }
  void unit(const Unit& u, const float* in, float* out, bool relu) {
    conv::conv2d_nhwc(prep.units[u.id], in, int(B), int(u.H), int(u.W), out, relu, nullptr);
  }
  void residual_unit(const Unit& u, const float* in, const float* identity, float* out) {
    conv::conv2d_nhwc(prep.units[u.id], in, int(B), int(u.H), int(u.W), out, true, identity);
  }
  double lap() {
    const auto now = InferenceClock::now();
    const double s = std::chrono::duration<double>(now - clock).count();
    clock = now;
    return s;
  }
  void stage(int i, const float* x, int64_t h, int64_t w, int64_t c) {
    (i == 0 ? times.stem : times.layer[i - 1]) = lap();
    if (!hook) return;
    nchw.resize(size_t(B * c * h * w));
    conv::nhwc_to_nchw(x, int(B), int(h), int(w), int(c), nchw.data());
    hook(kStageNames[i], nchw.data(), {B, c, h, w});
    clock = InferenceClock::now();  // the hook's copy is not the stage's time
  }
  void attnpool(const float* x, float* features) {
    attnpool_inference(features, x, prep.pool, B, t.HW_ + 1, t.C4_, t.heads_, t.embed_, T1);
    times.attnpool = lap();
    if (hook) hook("attnpool", features, {B, t.embed_});
  }
};

template <typename T>
void ResNetTower<T>::encode(const float* pixels, int64_t B, float* features, const StageHook& hook,
                            StageTimes* times) const {
  if constexpr (!std::is_same_v<T, float>) {
    throw Error("only a float ResNet tower encodes for inference");
  } else {
    if (B <= 0) return;
    const std::shared_ptr<const Prepared> prep = prepared_;  // a preparation outlives the call
    if (!prep) throw Error("ResNetTower::encode: the tower is not prepared for inference");
    // The largest activation, in floats: the ping-pong buffers' size.
    int64_t biggest = B * S_ * S_ * 3;
    for (const Unit* u : {&stem1_, &stem2_, &stem3_})
      biggest = std::max(biggest, B * u->Ho * u->Wo * u->s.out_channels);
    for (const Block& b : blocks_)
      biggest = std::max({biggest, B * b.H * b.W * std::max(b.planes, b.inplanes),
                          B * b.Hp * b.Wp * b.planes * 4});
    biggest = std::max(biggest, B * (HW_ + 1) * C4_);
    // Uninitialised (every element is written before it is read): zero-filling 4 x 100 MB at
    // batch 32 cost RN50 5-10 %.
    const std::unique_ptr<float[]> storage(new float[size_t(4 * biggest)]);
    float* X = storage.get();
    InferenceRun<float> run{*this, *prep, B, hook, {}, X, X + biggest, X + 2 * biggest, X + 3 * biggest, {}};
    walk(run, pixels, B, features);
    if (times) *times = run.times;
  }
}

template class ResNetTower<float>;
template class ResNetTower<double>;

}  // namespace clip::nn
