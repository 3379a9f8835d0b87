#include "backend/matmul.h"
#include "model/resnet.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "backend/conv.h"
#include "core/error.h"

namespace clip {
namespace resnet_detail {

struct Block {
  int inplanes = 0, planes = 0, stride = 1;
  bool has_downsample = false;
  conv::ConvWeights conv1, conv2, conv3, downsample;  // batch norm folded in
};

struct Weights {
  conv::ConvWeights stem1, stem2, stem3;
  std::vector<Block> layers[4];
  int embed = 0;    // attention-pool width (32 * width)
  int tokens = 0;   // spatial^2 + 1
  int heads = 0;
  int output_dim = 0;
  std::vector<float> positional;  // [tokens, embed]
  // Linear layers in PyTorch layout [out, in]. k_proj's bias is not kept: it adds the same
  // q.b_k to every score of a head, which softmax removes.
  std::vector<float> q_w, q_b, k_w, v_w, v_b, c_w, c_b;
  mutable std::mutex times_mutex;
  mutable ResNetVisual::StageTimes last_times;
};

}  // namespace resnet_detail

namespace {

using resnet_detail::Block;
using resnet_detail::Weights;
using Clock = std::chrono::steady_clock;

std::string shape_string(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string source_of(const LoadedCheckpoint& ck) {
  return ck.weights_path.empty() ? std::string("checkpoint") : ck.weights_path;
}

bool has(const LoadedCheckpoint& ck, const std::string& name) { return ck.tensors.count(name) != 0; }

// The F32 tensor `name` with the given shape (-1 = any), or a clip::Error naming both.
const Tensor& tensor(const LoadedCheckpoint& ck, const std::string& name, const std::vector<int64_t>& shape) {
  auto it = ck.tensors.find(name);
  if (it == ck.tensors.end())
    throw Error(source_of(ck) + ": ModifiedResNet tensor '" + name + "' is missing");
  const Tensor& t = it->second;
  if (t.dtype != DType::F32)
    throw Error(source_of(ck) + ": tensor '" + name + "' is " + dtype_name(t.dtype) + ", expected F32");
  bool ok = t.shape.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == t.shape[i];
  if (!ok)
    throw Error(source_of(ck) + ": tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " +
                shape_string(shape) + " (-1: any)");
  return t;
}

const float* data(const LoadedCheckpoint& ck, const std::string& name, const std::vector<int64_t>& shape) {
  return tensor(ck, name, shape).f32();
}

std::vector<float> copy_of(const LoadedCheckpoint& ck, const std::string& name, const std::vector<int64_t>& shape) {
  const Tensor& t = tensor(ck, name, shape);
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

// A bias-free convolution `conv` followed by the batch norm `bn`, folded.
conv::ConvWeights conv_bn(const LoadedCheckpoint& ck, const std::string& conv, const std::string& bn,
                          int in, int out, int kernel, int stride, int padding) {
  conv::Conv2dShape s{in, out, kernel, stride, padding};
  const float* w = data(ck, conv + ".weight", {out, in, kernel, kernel});
  if (has(ck, conv + ".bias")) throw Error(source_of(ck) + ": unexpected tensor '" + conv + ".bias' (ModifiedResNet convolutions have no bias)");
  const std::vector<int64_t> c{out};
  return conv::fold_batch_norm(conv::make_conv_weights(s, w), data(ck, bn + ".weight", c), data(ck, bn + ".bias", c),
                               data(ck, bn + ".running_mean", c), data(ck, bn + ".running_var", c), 1e-5f);
}

int count_blocks(const LoadedCheckpoint& ck, int layer) {
  int n = 0;
  while (has(ck, "visual.layer" + std::to_string(layer) + "." + std::to_string(n) + ".conv1.weight")) ++n;
  return n;
}

// Spatial size after the stem (conv 3x3 stride 2, pad 1; then 2x2 average pool).
int stem_out(int image) { return conv::conv_out_size(image, 3, 2, 1) / 2; }

struct Timer {
  Clock::time_point t0 = Clock::now();
  double lap() {
    auto t1 = Clock::now();
    double s = std::chrono::duration<double>(t1 - t0).count();
    t0 = t1;
    return s;
  }
};

}  // namespace

ResNetVisual::ResNetVisual(const LoadedCheckpoint& ck) : weights_(std::make_unique<Weights>()) {
  Weights& W = *weights_;
  const std::string src = source_of(ck);
  // ---- architecture from the shapes (openai/CLIP build_model), checked against the config
  int layers[4];
  for (int l = 0; l < 4; ++l) {
    layers[l] = count_blocks(ck, l + 1);
    if (layers[l] == 0) throw Error(src + ": no blocks found for visual.layer" + std::to_string(l + 1) + " (not a ModifiedResNet checkpoint)");
  }
  const Tensor& l1 = tensor(ck, "visual.layer1.0.conv1.weight", {-1, -1, 1, 1});
  const int width = int(l1.shape[0]);
  if (width < 2 || width % 2) throw Error(src + ": ModifiedResNet width " + std::to_string(width) + " must be even");
  W.embed = width * 32;
  const Tensor& pos = tensor(ck, "visual.attnpool.positional_embedding", {-1, W.embed});
  W.tokens = int(pos.shape[0]);
  const int spatial = int(std::lround(std::sqrt(double(W.tokens - 1))));
  if (W.tokens < 2 || spatial * spatial + 1 != W.tokens)
    throw Error(src + ": visual.attnpool.positional_embedding has " + std::to_string(W.tokens) + " rows; expected spatial^2 + 1");
  const Tensor& cw = tensor(ck, "visual.attnpool.c_proj.weight", {-1, W.embed});
  W.output_dim = int(cw.shape[0]);

  const VisionConfig& given = ck.config.vision;
  config_ = given;
  config_.resnet_layers.assign(layers, layers + 4);
  config_.width = width;
  config_.image_size = spatial * 32;
  config_.patch_size = 0;
  config_.layers = layers[0] + layers[1] + layers[2] + layers[3];
  config_.mlp_dim = 0;
  // open_clip may set heads through its head width; OpenAI's build_model uses width*32/64.
  config_.heads = (given.is_resnet() && given.heads > 0 && W.embed % given.heads == 0) ? given.heads : width * 32 / 64;
  if (given.is_resnet()) {
    auto mismatch = [&](const std::string& what, const std::string& cfg, const std::string& shapes) {
      throw Error(src + ": the config's vision " + what + " " + cfg + " does not match the weights (" + shapes + ")");
    };
    if (given.resnet_layers != config_.resnet_layers) {
      auto join = [](const std::vector<int>& v) {
        std::string r = "(";
        for (size_t i = 0; i < v.size(); ++i) {
          if (i) r += ',';
          r += std::to_string(v[i]);
        }
        return r + ")";
      };
      mismatch("layers", join(given.resnet_layers), join(config_.resnet_layers));
    }
    if (given.width != width) mismatch("width", std::to_string(given.width), std::to_string(width));
    // Any input size whose feature map ends at spatial x spatial works (e.g. 224 and 225).
    if ((stem_out(given.image_size) >> 3) != spatial)
      mismatch("image_size", std::to_string(given.image_size), std::to_string(config_.image_size));
    config_.image_size = given.image_size;
  }
  W.heads = config_.heads;
  embed_dim_ = W.output_dim;

  // ---- stem
  const int half = width / 2;
  W.stem1 = conv_bn(ck, "visual.conv1", "visual.bn1", 3, half, 3, 2, 1);
  W.stem2 = conv_bn(ck, "visual.conv2", "visual.bn2", half, half, 3, 1, 1);
  W.stem3 = conv_bn(ck, "visual.conv3", "visual.bn3", half, width, 3, 1, 1);
  // ---- residual layers
  int inplanes = width;
  for (int l = 0; l < 4; ++l) {
    const int planes = width << l;
    for (int b = 0; b < layers[l]; ++b) {
      Block blk;
      blk.inplanes = inplanes;
      blk.planes = planes;
      blk.stride = (l > 0 && b == 0) ? 2 : 1;
      const std::string p = "visual.layer" + std::to_string(l + 1) + "." + std::to_string(b) + ".";
      blk.conv1 = conv_bn(ck, p + "conv1", p + "bn1", inplanes, planes, 1, 1, 0);
      blk.conv2 = conv_bn(ck, p + "conv2", p + "bn2", planes, planes, 3, 1, 1);
      blk.conv3 = conv_bn(ck, p + "conv3", p + "bn3", planes, planes * 4, 1, 1, 0);
      blk.has_downsample = blk.stride > 1 || inplanes != planes * 4;
      if (blk.has_downsample)
        blk.downsample = conv_bn(ck, p + "downsample.0", p + "downsample.1", inplanes, planes * 4, 1, 1, 0);
      else if (has(ck, p + "downsample.0.weight"))
        throw Error(src + ": unexpected tensor '" + p + "downsample.0.weight' (this block keeps its shape)");
      W.layers[l].push_back(std::move(blk));
      inplanes = planes * 4;
    }
  }
  // ---- attention pool
  const int64_t E = W.embed;
  W.positional = copy_of(ck, "visual.attnpool.positional_embedding", {W.tokens, E});
  W.q_w = copy_of(ck, "visual.attnpool.q_proj.weight", {E, E});
  W.q_b = copy_of(ck, "visual.attnpool.q_proj.bias", {E});
  W.k_w = copy_of(ck, "visual.attnpool.k_proj.weight", {E, E});
  tensor(ck, "visual.attnpool.k_proj.bias", {E});  // present in every checkpoint; cancels in softmax
  W.v_w = copy_of(ck, "visual.attnpool.v_proj.weight", {E, E});
  W.v_b = copy_of(ck, "visual.attnpool.v_proj.bias", {E});
  W.c_w = copy_of(ck, "visual.attnpool.c_proj.weight", {W.output_dim, E});
  W.c_b = copy_of(ck, "visual.attnpool.c_proj.bias", {W.output_dim});
}

ResNetVisual::~ResNetVisual() = default;
ResNetVisual::StageTimes ResNetVisual::last_stage_times() const {
  std::lock_guard<std::mutex> lock(weights_->times_mutex);
  return weights_->last_times;
}
ResNetVisual::ResNetVisual(ResNetVisual&&) noexcept = default;
ResNetVisual& ResNetVisual::operator=(ResNetVisual&&) noexcept = default;

void ResNetVisual::encode(const float* pixels_nchw, int batch, float* features_out) const {
  encode(pixels_nchw, batch, features_out, StageHook());
}

void ResNetVisual::encode(const float* pixels_nchw, int batch, float* features_out, const StageHook& hook) const {
  if (batch <= 0) return;
  const Weights& W = *weights_;
  const int S = config_.image_size;
  const int width = config_.width;
  const int64_t n = batch;

  // ---- buffer sizes: the largest activation of the network, in floats
  const int s1 = conv::conv_out_size(S, 3, 2, 1);
  int64_t biggest = n * S * S * 3;
  biggest = std::max(biggest, n * s1 * s1 * width);
  int h = s1 / 2;
  for (int l = 0; l < 4; ++l) {
    const int planes = width << l;
    biggest = std::max(biggest, n * h * h * std::max(planes * 4, W.layers[l][0].inplanes));
    if (l > 0) h /= 2;  // blocks 0 of layers 2-4 pool after their 3x3 convolution
    biggest = std::max(biggest, n * h * h * planes * 4);
  }
  std::vector<std::unique_ptr<float[]>> owned;
  auto alloc = [&](int64_t count) {
    owned.emplace_back(new float[size_t(count)]);
    return owned.back().get();
  };
  float* X = alloc(biggest);
  float* Y = alloc(biggest);
  float* T1 = alloc(biggest);
  float* T2 = alloc(biggest);

  std::vector<float> nchw;
  auto emit = [&](const char* stage, const float* nhwc, int hh, int ww, int c) {
    if (!hook) return;
    nchw.resize(size_t(n * c * hh * ww));
    conv::nhwc_to_nchw(nhwc, batch, hh, ww, c, nchw.data());
    hook(stage, nchw.data(), {n, c, hh, ww});
  };

  StageTimes times;
  Timer timer;
  // ---- stem
  conv::nchw_to_nhwc(pixels_nchw, batch, 3, S, S, X);
  conv::conv2d_nhwc(W.stem1, X, batch, S, S, T1, true);
  conv::conv2d_nhwc(W.stem2, T1, batch, s1, s1, T2, true);
  conv::conv2d_nhwc(W.stem3, T2, batch, s1, s1, T1, true);
  h = s1 / 2;
  conv::avgpool2d_nhwc(T1, batch, s1, s1, width, 2, X);
  times.stem = timer.lap();
  emit("stem", X, h, h, width);

  // ---- residual layers (X holds the current activation, h its size)
  static const char* const names[4] = {"layer1", "layer2", "layer3", "layer4"};
  for (int l = 0; l < 4; ++l) {
    for (const Block& b : W.layers[l]) {
      const int ho = h / b.stride;
      conv::conv2d_nhwc(b.conv1, X, batch, h, h, T1, true);
      conv::conv2d_nhwc(b.conv2, T1, batch, h, h, T2, true);
      const float* branch = T2;
      if (b.stride > 1) {
        conv::avgpool2d_nhwc(T2, batch, h, h, b.planes, b.stride, T1);
        branch = T1;
      }
      // out = relu(conv3(branch) + identity), accumulated in place on the identity.
      if (b.has_downsample) {
        const float* src = X;
        if (b.stride > 1) {
          conv::avgpool2d_nhwc(X, batch, h, h, b.inplanes, b.stride, T2);
          src = T2;
        }
        conv::conv2d_nhwc(b.downsample, src, batch, ho, ho, Y, false);
        conv::conv2d_nhwc(b.conv3, branch, batch, ho, ho, Y, true, Y);
        std::swap(X, Y);
      } else {
        conv::conv2d_nhwc(b.conv3, branch, batch, ho, ho, X, true, X);
      }
      h = ho;
    }
    times.layer[l] = timer.lap();
    emit(names[l], X, h, h, (width << l) * 4);
  }

  // ---- attention pool: query = mean token; keys/values = mean token + spatial tokens.
  const int64_t E = W.embed, T = W.tokens, heads = W.heads, hd = E / heads, O = W.output_dim;
  if (h * h + 1 != T)
    throw Error("ResNetVisual: the final feature map is " + std::to_string(h) + "x" + std::to_string(h) +
                " but the positional embedding has " + std::to_string(T) + " rows");
  // Tokens [n, T, E] (in T1); the mean is a sum then a division, as torch.mean.
  float* tok = T1;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    const float* x = X + b * (T - 1) * E;
    float* t = tok + b * T * E;
    for (int64_t c = 0; c < E; ++c) t[c] = 0.0f;
    for (int64_t i = 0; i < T - 1; ++i)
      for (int64_t c = 0; c < E; ++c) t[c] += x[i * E + c];
    for (int64_t c = 0; c < E; ++c) t[c] = t[c] / float(T - 1) + W.positional[c];
    for (int64_t i = 1; i < T; ++i)
      for (int64_t c = 0; c < E; ++c) t[i * E + c] = x[(i - 1) * E + c] + W.positional[i * E + c];
  }
  // q = (t0 Wq^T + bq) / sqrt(hd)   [n, E]
  std::vector<float> q(size_t(n * E)), u(size_t(n * heads * E)), p(size_t(n * heads * T)),
      xbar(size_t(n * heads * E)), o(size_t(n * E));
  conv::parallel_sgemm(n, E, E, tok, T * E, W.q_w.data(), E, true, q.data(), E);
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < E; ++c) q[b * E + c] = (q[b * E + c] + W.q_b[c]) * scale;
  {
    // score(t) = q_h . (Wk_h x_t + bk_h) = (Wk_h^T q_h) . x_t + const: u_h = q_h Wk_h  [n, heads, E]
#pragma omp parallel for schedule(static)
    for (int64_t hh = 0; hh < heads; ++hh)
      clip::sgemm(false, false, int(n), int(E), int(hd), 1.0f, q.data() + hh * hd, int(E), W.k_w.data() + hh * hd * E, int(E), 0.0f, u.data() + hh * E, int(heads * E));
    // Scores, softmax over the tokens, and the attention-weighted token xbar_h = sum_t p_t x_t.
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; ++b) {
      float* pb = p.data() + b * heads * T;
      const float* tb = tok + b * T * E;
      clip::sgemm(false, true, int(heads), int(T), int(E), 1.0f, u.data() + b * heads * E, int(E), tb, int(E), 0.0f, pb, int(T));
      for (int64_t hh = 0; hh < heads; ++hh) {
        float* row = pb + hh * T;
        float mx = row[0];
        for (int64_t t = 1; t < T; ++t) mx = std::max(mx, row[t]);
        float sum = 0.0f;
        for (int64_t t = 0; t < T; ++t) sum += (row[t] = std::exp(row[t] - mx));
        const float inv = 1.0f / sum;
        for (int64_t t = 0; t < T; ++t) row[t] *= inv;
      }
      clip::sgemm(false, false, int(heads), int(E), int(T), 1.0f, pb, int(T), tb, int(E), 0.0f, xbar.data() + b * heads * E, int(E));
    }
    // head output = Wv_h xbar_h + bv_h (the probabilities sum to one)   [n, E]
#pragma omp parallel for schedule(static)
    for (int64_t hh = 0; hh < heads; ++hh)
      clip::sgemm(false, true, int(n), int(hd), int(E), 1.0f, xbar.data() + hh * E, int(heads * E), W.v_w.data() + hh * hd * E, int(E), 0.0f, o.data() + hh * hd, int(E));
  }
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < E; ++c) o[b * E + c] += W.v_b[c];
  conv::parallel_sgemm(n, O, E, o.data(), E, W.c_w.data(), E, true, features_out, O);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < O; ++c) features_out[b * O + c] += W.c_b[c];
  times.attnpool = timer.lap();
  {
    std::lock_guard<std::mutex> lock(W.times_mutex);
    W.last_times = times;
  }
  if (hook) hook("attnpool", features_out, {n, O});
}

}  // namespace clip
