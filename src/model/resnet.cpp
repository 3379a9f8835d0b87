#include "backend/matmul.h"
#include "model/resnet.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include "backend/conv.h"
#include "nn/resnet_tower.h"
#include "core/error.h"

namespace clip {
namespace resnet_detail {

// The tower (nn/resnet_tower.h: the network training uses), prepared from the checkpoint.
struct Weights {
  std::unique_ptr<nn::ResNetTower<float>> tower;
  mutable std::mutex times_mutex;
  mutable ResNetVisual::StageTimes last_times;
};

}  // namespace resnet_detail

namespace {

using resnet_detail::Weights;

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

int count_blocks(const LoadedCheckpoint& ck, int layer) {
  int n = 0;
  while (has(ck, "visual.layer" + std::to_string(layer) + "." + std::to_string(n) + ".conv1.weight")) ++n;
  return n;
}

// Spatial size after the stem (conv 3x3 stride 2, pad 1; then 2x2 average pool).
int stem_out(int image) { return conv::conv_out_size(image, 3, 2, 1) / 2; }

}  // namespace

ResNetVisual::ResNetVisual(const LoadedCheckpoint& ck, Precision precision) : weights_(std::make_unique<Weights>()) {
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
  const int W_embed = width * 32;
  const Tensor& pos = tensor(ck, "visual.attnpool.positional_embedding", {-1, W_embed});
  const int W_tokens = int(pos.shape[0]);
  const int spatial = int(std::lround(std::sqrt(double(W_tokens - 1))));
  if (W_tokens < 2 || spatial * spatial + 1 != W_tokens)
    throw Error(src + ": visual.attnpool.positional_embedding has " + std::to_string(W_tokens) + " rows; expected spatial^2 + 1");
  const Tensor& cw = tensor(ck, "visual.attnpool.c_proj.weight", {-1, W_embed});
  const int W_output_dim = int(cw.shape[0]);

  const VisionConfig& given = ck.config.vision;
  config_ = given;
  config_.resnet_layers.assign(layers, layers + 4);
  config_.width = width;
  config_.image_size = spatial * 32;
  config_.patch_size = 0;
  config_.layers = layers[0] + layers[1] + layers[2] + layers[3];
  config_.mlp_dim = 0;
  // open_clip may set heads through its head width; OpenAI's build_model uses width*32/64.
  config_.heads = (given.is_resnet() && given.heads > 0 && W_embed % given.heads == 0) ? given.heads : width * 32 / 64;
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
  embed_dim_ = W_output_dim;

  // ---- the tower (the one ModifiedResNet definition, nn/resnet_tower.h) and the checkpoint
  // checked against its parameters: no tensor it would ignore, then every one it reads, by name
  // and shape (prepare: errors name them), batch norm folded in.
  W.tower = std::make_unique<nn::ResNetTower<float>>(config_, embed_dim_, "visual.", /*own_arenas=*/false);
  std::set<std::string> params;
  for (const nn::ParamEntry& e : W.tower->parameters()) {
    params.insert(e.name);
    const std::string conv = e.name.substr(0, e.name.size() - std::string(".weight").size());
    if (e.shape.size() == 4 && has(ck, conv + ".bias"))
      throw Error(src + ": unexpected tensor '" + conv + ".bias' (ModifiedResNet convolutions have no bias)");
  }
  const std::string ds = "downsample.0.weight";
  for (const auto& [name, t] : ck.tensors)  // a downsample on a block of the tower that has none
    if (name.ends_with("." + ds) && !params.count(name) &&
        params.count(name.substr(0, name.size() - ds.size()) + "conv1.weight"))
      throw Error(src + ": unexpected tensor '" + name + "' (this block keeps its shape)");
  W.tower->prepare([&ck](const std::string& name, const std::vector<int64_t>& shape) { return data(ck, name, shape); },
                   precision);
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
  nn::ResNetTower<float>::StageTimes t;
  weights_->tower->encode(pixels_nchw, batch, features_out, hook, &t);
  std::lock_guard<std::mutex> lock(weights_->times_mutex);
  StageTimes& out = weights_->last_times;
  out.stem = t.stem;
  for (int l = 0; l < 4; ++l) out.layer[l] = t.layer[l];
  out.attnpool = t.attnpool;
}

}  // namespace clip
