#pragma once
// A trainable ModifiedResNet image tower (openai/CLIP model.py; RN50, RN101, RN50x4, ... at
// any depth and width): the stem of three 3x3 convolutions (the first with stride 2), each
// with batch norm and ReLU, then a 2x2 average pool; four stages of Bottleneck blocks
// (1x1, 3x3, 1x1 convolutions, expansion 4) whose stride is an average pool after the 3x3
// convolution and, on the shortcut, an average pool before the 1x1 projection; and the
// attention-pooling head. Explicit forward/backward passes over planned NHWC activation
// buffers (nn/conv_layers.h), llm.c style like ClipNetwork's ViT tower.
//
// Parameters are named as in OpenAI's state dict ("visual.conv1.weight", "visual.bn1.weight",
// "visual.layer1.0.conv1.weight", ..., "visual.layer2.0.downsample.0.weight",
// "visual.attnpool.q_proj.weight") and laid out in its order in one arena, with a gradient
// arena of the same layout. The tower owns both unless bind() hands it ranges of someone
// else's arenas (ClipNetwork's, whose image range would then be this tower's layout).
// Batch-norm running statistics are buffers, not parameters: they are kept apart (never
// optimised) and appear in state_dict() as running_mean / running_var (F32) and
// num_batches_tracked (I64), as in OpenAI's checkpoints.
//
// Batch norm follows torch's nn.BatchNorm2d: in training mode (the default) it normalises
// with the batch statistics of each forward and updates the running statistics (momentum
// 0.1, unbiased variance); in evaluation mode it uses the running statistics.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <functional>
#include <memory>

#include "backend/conv.h"
#include "core/tensor.h"
#include "model/config.h"
#include "nn/clip_network.h"  // ParamEntry, Tower, excluded_from_weight_decay
#include "nn/conv_layers.h"
#include "core/rng.h"

namespace clip::nn {

// One BatchNorm2d's buffers.
struct BatchNormBuffers {
  std::string prefix;  // e.g. "visual.layer1.0.bn1"
  int64_t channels = 0;
  size_t offset = 0;   // running_mean at offset, running_var at offset + channels (stats arena)
  int64_t num_batches_tracked = 0;
};

template <typename T>
class ResNetTower {
 public:
  // vision: resnet_layers (four stage depths), width (the stem width, even; stage widths are
  // width * 4 * 2^i), image_size (the feature map after the stem and stages must be
  // image_size / 32 on a side: the attention pool's positional embedding has
  // (image_size/32)^2 + 1 rows), heads (must divide 32 * width). embed_dim: output size.
  // own_arenas = false: the layout only, no parameter or gradient memory until bind() (a
  // network that binds it to its own arenas, or that only lists the parameters).
  ResNetTower(const VisionConfig& vision, int64_t embed_dim, const std::string& prefix = "visual.",
              bool own_arenas = true);
  // Not copyable (it holds pointers into its own arenas); moves keep them valid.
  ResNetTower(const ResNetTower&) = delete;
  ResNetTower& operator=(const ResNetTower&) = delete;
  ResNetTower(ResNetTower&&) noexcept = default;
  ResNetTower& operator=(ResNetTower&&) noexcept = default;

  // ---- parameters (offsets relative to the tower's first parameter) ----
  const std::vector<ParamEntry>& parameters() const { return entries_; }
  const ParamEntry& entry(const std::string& name) const;  // throws clip::Error if unknown
  size_t num_params() const { return total_; }
  // Use params[0, num_params()) and grads[0, num_params()) of external arenas from now on
  // (the current values are NOT copied). nullptr for both goes back to the tower's own.
  void bind(T* params, T* grads);
  T* params() { return P_; }
  const T* params() const { return P_; }
  T* grads() { return G_; }
  const T* grads() const { return G_; }
  T* param(const std::string& name) { return P_ + entry(name).offset; }
  T* grad(const std::string& name) { return G_ + entry(name).offset; }
  void zero_grad();

  // ---- batch-norm buffers ----
  const std::vector<BatchNormBuffers>& batch_norms() const { return bns_; }
  T* running_mean(size_t i) { return stats_.data() + bns_[i].offset; }
  T* running_var(size_t i) { return stats_.data() + bns_[i].offset + bns_[i].channels; }
  void set_bn_momentum(double m) { momentum_ = m; }  // torch's default 0.1
  double bn_eps() const { return eps_; }

  // model.py's initialisation: PyTorch's module defaults (convolutions and Linear layers
  // U(+-1/sqrt(fan_in)), batch norm weight 1, bias 0, running mean 0, var 1), then
  // CLIP.initialize_parameters for the ResNet: the attention pool's q/k/v/c_proj weights
  // N(0, (32 width)^-1/2), every Bottleneck's bn3.weight zero; positional embedding
  // N(0, 1) / sqrt(32 width). Draws in parameter order from rng.
  void init_openai(Rng& rng);
  void init_openai(uint64_t seed) {
    Rng rng(seed);
    init_openai(rng);
  }
  // Parameters and batch-norm buffers from tensors with the tower's names (any float dtype;
  // num_batches_tracked any integer or float dtype, 0 when absent). Every parameter, running
  // mean and running variance must be present with the right shape.
  void load(const std::map<std::string, Tensor>& tensors);
  // Parameters and buffers under their OpenAI names: F32, num_batches_tracked I64 (shape []).
  std::map<std::string, Tensor> state_dict() const;

  // ---- forward / backward ----
  void set_training(bool on) { training_ = on; }  // batch-norm mode; true at construction
  bool training() const { return training_; }
  // pixels [B, 3, S, S] (NCHW, normalised) -> features [B, embed_dim]. Keeps the activations
  // for backward() until the next forward. In training mode the running statistics are
  // updated unless update_running_stats is false (for a second forward over the same batch,
  // e.g. the re-run of cached-feature gradient accumulation).
  void forward(const float* pixels, int64_t B, T* features, bool update_running_stats = true);
  // Accumulates the parameter gradients for d(loss)/d(features) of the last forward.
  void backward(const T* d_features);

  // ---- inference: the same tower prepared, run without saved activations ----
  // The preparation folds each unit's batch norm (running statistics) into its convolution
  // for the backend's convolutions (ReLU and the residual add fused); the attention pool reads
  // its weights in place. `tensor(name, shape)` gives each float tensor by its OpenAI name (a
  // checkpoint's; it must outlive the preparation and throw for a missing one); without it,
  // the tower's own parameters and running statistics (validation during training: drop the
  // preparation before they change). T = float. `precision` (int8, int4): the convolutions'
  // products on low-precision preparations of the folded weights (im2col rows x
  // backend/matmul.h PackedWeight; bf16 keeps them f32, conv::prepare_conv_products says why);
  // the attention pool stays f32.
  using TensorSource =
      std::function<const float*(const std::string& name, const std::vector<int64_t>& shape)>;
  void prepare(const TensorSource& tensor, Precision precision = Precision::F32);
  void prepare();
  void unprepare() { prepared_.reset(); }
  bool prepared() const { return prepared_ != nullptr; }
  // Called after each stage with its activation in NCHW order: "stem" [B, width, S/4, S/4],
  // "layer1" .. "layer4", "attnpool" [B, embed_dim] (the output).
  using StageHook = std::function<void(const std::string& stage, const float* data,
                                       const std::vector<int64_t>& shape)>;
  struct StageTimes {  // seconds of one encode: stem, layer1..4, attnpool
    double stem = 0, layer[4] = {0, 0, 0, 0}, attnpool = 0;
  };
  // pixels [B, 3, S, S] -> features [B, embed_dim], with the prepared weights (an error
  // without them). Allocates its buffers per call: safe to call from several threads at once.
  void encode(const float* pixels, int64_t B, float* features, const StageHook& hook = {},
              StageTimes* times = nullptr) const;

  int64_t embed_dim() const { return embed_; }
  int64_t image_size() const { return S_; }
  size_t activation_bytes() const { return arena_.size() * sizeof(T); }

 private:
  struct Unit {  // a bias-free convolution followed by a BatchNorm2d
    size_t id = 0;                         // index into Prepared::units
    std::string conv_name, bn_name;        // "visual.conv1", "visual.bn1"
    ConvShape s;
    int64_t H = 0, W = 0, Ho = 0, Wo = 0;  // input and output spatial size
    size_t w = 0, gamma = 0, beta = 0;     // parameter offsets
    size_t bn = 0;                         // index into bns_
    T *c = nullptr, *mean = nullptr, *rstd = nullptr;  // conv output, batch statistics
  };
  struct Block {
    int64_t inplanes = 0, planes = 0, stride = 1, H = 0, W = 0, Hp = 0, Wp = 0;
    bool has_ds = false;
    Unit c1, c2, c3, ds;
    T *a1 = nullptr, *a2 = nullptr, *p2 = nullptr, *pd = nullptr, *out = nullptr;
  };

  size_t add_param(const std::string& name, std::vector<int64_t> shape);
  Unit add_unit(const std::string& conv, const std::string& bn, int64_t in, int64_t out,
                int64_t k, int64_t stride, int64_t pad, int64_t H, int64_t W);
  void plan(int64_t B);
  void unit_forward(const Unit& u, const T* in, int64_t B, T* y, bool relu, bool update);
  // dy: d(batch-norm output); din (may be null) += d(conv input). Uses dc as scratch.
  void unit_backward(const Unit& u, const T* in, const T* dy, T* din, int64_t B, T* dc);

  // The forward's data flow, written once (resnet_tower.cpp): forward() walks it with a
  // TrainingRun (batch statistics, every activation kept for backward), encode() with an
  // InferenceRun (prepared units: batch norm folded, ReLU and the residual add fused into the
  // convolution; four ping-pong buffers). The run decides how a unit computes and where each
  // activation lives; the walk decides what follows what.
  struct StemBuffers;
  struct BlockBuffers;
  struct TrainingRun;
  // A member template only so that instantiating ResNetTower<double> leaves it alone
  // (inference is float: F = float).
  template <typename F>
  struct InferenceRun;
  AttnPoolWeights<T> pool_weights() const {  // the attention pool's parameters in the arena
    return {P_ + pos_, P_ + q_w_, P_ + q_b_, P_ + k_w_, P_ + k_b_, P_ + v_w_, P_ + v_b_, P_ + c_w_, P_ + c_b_};
  }
  template <typename Run>
  void walk(Run& run, const float* pixels, int64_t B, T* features) const;

  std::string prefix_;
  int64_t S_ = 0, width_ = 0, embed_ = 0, C4_ = 0, heads_ = 0, HW_ = 0;
  std::vector<int> layers_;
  std::vector<ParamEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<BatchNormBuffers> bns_;
  std::vector<T> stats_;
  size_t total_ = 0, stats_total_ = 0;
  std::vector<T> own_params_, own_grads_;
  T* P_ = nullptr;
  T* G_ = nullptr;
  double eps_ = 1e-5, momentum_ = 0.1;
  bool training_ = true;

  Unit stem1_, stem2_, stem3_;
  std::vector<Block> blocks_;
  size_t pos_ = 0, k_w_ = 0, k_b_ = 0, q_w_ = 0, q_b_ = 0, v_w_ = 0, v_b_ = 0, c_w_ = 0, c_b_ = 0;
  size_t units_ = 0;  // how many Units add_unit made

  struct Prepared {
    std::vector<conv::ConvWeights> units;  // by Unit::id, batch norm folded in
    std::vector<float> pool_storage;        // the attention pool's tensors, copied
    AttnPoolWeights<float> pool{};          // views of pool_storage
  };
  std::shared_ptr<const Prepared> prepared_;

  // activations (planned for planned_B_ images)
  int64_t planned_B_ = 0, B_used_ = 0;
  bool fwd_training_ = true;
  std::vector<T> arena_;
  T *x0_ = nullptr, *sa1_ = nullptr, *sa2_ = nullptr, *sa3_ = nullptr, *stem_out_ = nullptr;
  AttnPoolActs<T> ap_{};
  T *gA_ = nullptr, *gB_ = nullptr, *s1_ = nullptr, *s2_ = nullptr, *s3_ = nullptr,
    *ap_scratch_ = nullptr;
};

extern template class ResNetTower<float>;
extern template class ResNetTower<double>;

}  // namespace clip::nn
