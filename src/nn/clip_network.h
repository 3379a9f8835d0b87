#pragma once
// The CLIP network with a ViT (or ModifiedResNet) image tower and the text tower: ONE
// definition for training and inference. Each layer is a forward/backward pair
// (nn/layers.h); training runs forward_* (keeping what backward_* needs), inference runs
// encode_* (the same forward, no saved activations: every block works in place in one
// shared set of buffers). Inference speed-ups are preparations of this model, not a second
// implementation: the blocks' linear layers prepared once (packed f32 or bf16, backend/matmul.h),
// the last block computed for the pooled rows only, each text only up to its end token.
//
// Two ways to build one:
//   * for training, ClipNetwork(config): the parameters live in ONE contiguous arena
//     (params()), in OpenAI state-dict order and names: first every "visual.*" tensor, then
//     the text tower, then "logit_scale" last, so a tower is one contiguous range (freezing,
//     per-tower clipping); the gradients in a second arena of the same layout (grads()); the
//     optimizer keeps its moments in two more (optimizer.h); activations are planned per
//     tower for a batch size on first use and reused while it fits;
//   * for inference, ClipNetwork(checkpoint, precision) (float only): no arenas; the weights
//     are the checkpoint's tensors (views of the mapped file, packed copies replacing their
//     pages), checked against the same parameter list (parameters(): the schema).
// T is float; double is instantiated for float64 reference comparisons (training only).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/matmul.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/weights.h"
#include "nn/layers.h"

namespace clip {
// Called with an activation after each stage of an encoder (parity tests compare them).
using ActivationHook = std::function<void(const std::string& name, const float* data,
                                          const std::vector<int64_t>& shape)>;
}  // namespace clip

namespace clip::nn {

enum class Tower : uint8_t { Image, Text, Shared };  // Shared: logit_scale

struct ParamEntry {
  std::string name;             // OpenAI state-dict name
  std::vector<int64_t> shape;   // PyTorch shape
  size_t offset = 0;            // into the parameter (and gradient) arena, in elements
  size_t numel = 0;
  Tower tower = Tower::Shared;
  bool weight_decay = false;    // see excluded_from_weight_decay
};

// The weight-decay rule (issue 5): a parameter gets NO weight decay when
//   ndim < 2 || name contains "bn" || "ln" || "bias" || "logit_scale" || "embedding"
// i.e. open_clip's `exclude` lambda plus the embeddings (token_embedding.weight,
// positional_embedding, visual.class_embedding, visual.positional_embedding). tools/
// train_reference.py applies the same predicate.
bool excluded_from_weight_decay(const std::string& name, size_t ndim);

// Appends parameter `name` to a layout (entries in arena order, index by name) at offset
// `total`, which advances by its size; its weight decay follows the rule above. Returns its
// offset. ClipNetwork and ResNetTower lay out their arenas with it.
size_t append_param(std::vector<ParamEntry>& entries, std::map<std::string, size_t>& index,
                    size_t& total, const std::string& name, std::vector<int64_t> shape,
                    Tower tower);

// std::allocator that default-initialises (leaves trivially constructible values
// uninitialised) on resize, for activation arenas.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
class ResNetTower;

template <typename T>
class ClipNetwork {
 public:
  // The image tower is a ViT, or a ModifiedResNet when vision.resnet_layers is set (then the
  // image range of the arenas is a ResNetTower's layout, bound to them; see resnet_tower.h).
  // heads must divide the widths.
  explicit ClipNetwork(const ModelConfig& config);
  // The parameter list only (parameters(), resnet()->batch_norms()): no memory, no forward.
  struct LayoutOnly {};
  ClipNetwork(const ModelConfig& config, LayoutOnly);
  // Inference (T = float): the weights of `ckpt` (canonical names; ckpt must outlive this),
  // every tensor checked against parameters() (an error names the file and the tensor); the
  // blocks' linear layers prepared at `precision`. A ResNet image tower is loaded by
  // model/resnet.h (which infers and checks its architecture) as a prepared nn::ResNetTower:
  // then only the text tower is built here.
  ClipNetwork(const LoadedCheckpoint& ckpt, Precision precision);
  ~ClipNetwork();
  // Not copyable: a ResNet tower points into the arenas (moves keep them valid).
  ClipNetwork(const ClipNetwork&) = delete;
  ClipNetwork& operator=(const ClipNetwork&) = delete;
  ClipNetwork(ClipNetwork&&) noexcept;

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamEntry>& parameters() const { return entries_; }
  const ParamEntry& entry(const std::string& name) const;  // throws clip::Error if unknown
  size_t num_params() const { return params_.size(); }
  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  T* param(const std::string& name) { return params_.data() + entry(name).offset; }
  T* grad(const std::string& name) { return grads_.data() + entry(name).offset; }
  // The [begin, end) element range of a tower in the arenas.
  std::pair<size_t, size_t> tower_range(Tower tower) const;

  T logit_scale() const {
    return *logit_scale_w_;
  }
  T& logit_scale_ref() { return params_[logit_scale_offset_]; }
  T& logit_scale_grad() { return grads_[logit_scale_offset_]; }
  // SigLIP models (ModelConfig::init_logit_bias): the sigmoid loss's learned bias.
  bool has_logit_bias() const { return logit_bias_offset_ != kNone; }
  T logit_bias() const { return params_[logit_bias_offset_]; }
  T& logit_bias_grad() { return grads_[logit_bias_offset_]; }

  // openai/CLIP model.py's initialisation (initialize_parameters plus PyTorch's module
  // defaults for what it leaves alone), from a reproducible seeded generator.
  void init_openai(uint64_t seed);
  // Copies tensors (canonical OpenAI names, any float dtype) into the arena. Every parameter
  // must be present with the right shape (a ResNet tower: also every batch-norm running mean
  // and variance); unknown names are an error unless ignore_unknown.
  void load(const std::map<std::string, Tensor>& tensors, bool ignore_unknown = true);
  // The parameters as F32 tensors under their OpenAI names (copies); a ResNet tower adds its
  // batch-norm buffers (running_mean / running_var F32, num_batches_tracked I64).
  std::map<std::string, Tensor> state_dict() const;
  // Writes the parameters as an OpenAI-named F32 .safetensors file, which every `clip`
  // command that loads checkpoints accepts. A bare file carries no configuration: the loader
  // infers it from the shapes as openai/CLIP's build_model does (heads = width / 64,
  // QuickGELU), so use save_model_directory for other head counts or GELU.
  void save(const std::string& path) const;
  // A model directory (open_clip layout: weights + open_clip_config.json) that keeps the
  // whole configuration (heads, activation).
  void save_model_directory(const std::string& dir) const;

  void zero_grad();

  // Image tower: pixels [B, 3, S, S] (normalised) -> features [B, embed_dim]. Keeps the
  // activations for backward_image (until the next forward_image). A ResNet tower in
  // training mode normalises with the batch statistics and updates its running statistics
  // unless update_running_stats is false (the second forward of a micro-batch in
  // contrastive_gradients must not count it twice); a ViT ignores the flag.
  void forward_image(const float* pixels, int64_t B, T* features,
                     bool update_running_stats = true);
  // Accumulates the parameter gradients of the image tower for d(loss)/d(features).
  void backward_image(const T* d_features);
  // Text tower: ids [B, context_length] (pooled at the first occurrence of the largest id,
  // as argmax) -> features [B, embed_dim]. Only positions 0 .. max over the batch of the
  // pooled position are computed: under the causal mask nothing after a row's pooled token
  // reaches its features, so the others get no gradient either (the inference encoder does
  // the same).
  void forward_text(const int32_t* ids, int64_t B, T* features);
  void backward_text(const T* d_features);

  // The ResNet image tower, or nullptr for a ViT.
  ResNetTower<T>* resnet() { return resnet_.get(); }
  const ResNetTower<T>* resnet() const { return resnet_.get(); }
  // Batch-norm mode of a ResNet image tower: training (batch statistics, the default) or
  // evaluation (running statistics: validation, a frozen tower). No effect on a ViT.
  void set_image_training(bool on);
  bool image_training() const;

  // ---- inference: the forward without saved activations ----
  // pixels [B, 3, S, S] (normalised) -> features [B, embed_dim] (not normalised). A ResNet
  // tower runs in evaluation mode. Hook names: vision.embed [B,T,w] (class token + patches +
  // positions), vision.ln_pre, vision.block.<i> [B,T,w], vision.ln_post [B,w], vision.output;
  // with a hook the last block runs on all rows (otherwise on the class tokens only).
  void encode_images(const float* pixels, int64_t B, float* features,
                     const ActivationHook* hook = nullptr);
  // ids [B, context] (row stride context <= context_length; pooled at the first largest id)
  // -> features [B, embed_dim]. Hook names: text.embed, text.block.<i> ([B, T', d], T' the
  // batch's longest text up to its end token; positions after a text's own end token are
  // not computed and read 0), text.ln_final [B,d] (pooled rows), text.output.
  void encode_texts(const int32_t* ids, int64_t B, int64_t context, float* features,
                    const ActivationHook* hook = nullptr);
  // Training mode: prepares the blocks' linear layers from the current parameters, as the
  // inference constructor does, so encode_* computes exactly what a model loaded from a
  // checkpoint of these parameters computes (validation). The preparation is a copy: drop it
  // (unprepare) before the parameters change again. InferencePreparation does both.
  void prepare(Precision precision = Precision::F32);
  void unprepare();
  bool prepared() const;
  bool inference_only() const { return params_.empty(); }

  // Bytes of activation memory currently planned for both towers.
  size_t activation_bytes() const;

  // Activation recomputation (gradient checkpointing per residual block): only each block's
  // output is kept; a block's internals (LayerNorm outputs, q/k/v, attention probabilities,
  // MLP hidden states) live in one buffer shared by all blocks and are recomputed from the
  // block's input just before its backward. Costs one more forward pass of the blocks;
  // the gradients are bit-identical. Takes effect at the next forward. Transformer towers
  // only: a ResNet image tower keeps all its activations.
  void set_recompute(bool on);
  bool recompute() const { return recompute_; }

 private:
  struct BlockParams {  // offsets into the arenas
    size_t ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b, fc_w, fc_b, proj_w, proj_b;
  };
  struct BlockWeights {  // the same parameters as read by the forward (arena or checkpoint)
    const T *ln1_w, *ln1_b, *in_w, *in_b, *out_w, *out_b, *ln2_w, *ln2_b, *fc_w, *fc_b,
        *proj_w, *proj_b;
  };
  // A block's linear layers prepared for inference: in_proj as its q rows and its k | v rows
  // (the pooled last block projects k, v for all rows and q for a few).
  struct PreparedBlock {
    PackedWeight q, kv, out, fc, proj;
  };
  struct LayerActs {
    T *ln1, *ln1_mean, *ln1_rstd, *qkv, *probs, *attn, *res1, *ln2, *ln2_mean, *ln2_rstd, *h,
        *a, *res2;
  };
  struct TowerActs {
    int64_t B = 0;  // planned batch size (0: nothing planned)
    bool recompute = false;  // planned for recomputation
    int64_t B_used = 0;  // batch of the last forward
    int64_t L_used = 0;  // longest sequence of the last forward (text: up to its pooled token)
    int64_t rows = 0;    // rows of the last forward: B * L, or the packed texts' total
    std::vector<int64_t> seq_off;   // text: sequence b is rows seq_off[b] .. seq_off[b+1]-1
    std::vector<int64_t> pool_row;  // the pooled row of each batch element
    // Not zero-filled (every buffer is written before it is read): pages the current batch
    // does not reach (text positions after the last pooled token, the last block's rows
    // other than the pooled ones) are never touched, so they take no memory.
    std::vector<T, DefaultInitAllocator<T>> arena;
    std::vector<LayerActs> layers;
    // tower-level buffers (some unused by one tower)
    T *patches = nullptr, *ptok = nullptr, *x0 = nullptr, *lnpre = nullptr,
      *lnpre_mean = nullptr, *lnpre_rstd = nullptr, *pooled = nullptr, *lnfin = nullptr,
      *lnfin_mean = nullptr, *lnfin_rstd = nullptr, *pool_ln1 = nullptr, *pool_q = nullptr,
      *pool_dq = nullptr;
    // gradient scratch (g1: the residual stream's gradient; da: the MLP hidden gradient,
    // before and after the activation)
    T *g1, *dln, *dqkv, *dattn, *da, *dptok, *dpooled, *dlnfin;
    std::vector<int32_t> ids, pool_index;
    // The pooled rows' residual stream in the last block: res1 of the last layer in training;
    // its own [B, D] buffer in inference, where the blocks run in place.
    T* pool_res = nullptr;
    bool inference = false;  // planned without saved activations
  };
  struct TowerShape {
    int64_t L, D, H, F, layers;
    bool causal;
  };

  size_t add_param(const std::string& name, std::vector<int64_t> shape, Tower tower);
  void define_parameters(const std::string& where, bool with_resnet);
  void add_vit_parameters();
  std::vector<BlockParams> add_blocks(const std::string& prefix, int layers, int64_t D,
                                      int64_t F, Tower tower);
  void plan(TowerActs& acts, const TowerShape& s, int64_t B, bool vision);
  void plan_inference(TowerActs& acts, const TowerShape& s, int64_t B, bool vision);
  // Weight pointers of every forward parameter: from the arena (training) or `source`.
  void bind_weights(const std::function<const T*(const ParamEntry&)>& source);
  void prepare_blocks(Precision precision, const LoadedCheckpoint* ckpt);
  void image_forward(TowerActs& acts, const float* pixels, int64_t B, T* features,
                     const ActivationHook* hook);
  void text_forward(TowerActs& acts, const int32_t* ids, int64_t B, int64_t context,
                    T* features, const ActivationHook* hook);
  void block_forward(TowerActs& acts, const TowerShape& s, const BlockWeights& w,
                     const PreparedBlock* prep, size_t l, const T* in, int64_t B);
  void transformer_forward(TowerActs& acts, const TowerShape& s,
                           const std::vector<BlockWeights>& blocks,
                           const std::vector<PreparedBlock>& prep, const T* x, int64_t B,
                           const ActivationHook* hook, const std::string& hook_prefix);
  void attention_fwd(TowerActs& acts, const TowerShape& s, LayerActs& A, int64_t B);
  void emit(const ActivationHook* hook, const std::string& name, const T* x,
            std::vector<int64_t> shape) const;
  void emit_rows(const ActivationHook* hook, const std::string& name, const TowerActs& a,
                 const T* x, int64_t B, int64_t D) const;
  // The last block, for the pooled rows only (see clip_network.cpp).
  void last_block_forward(TowerActs& acts, const TowerShape& s, const BlockWeights& w,
                          const PreparedBlock* prep, const T* in, int64_t B);
  void last_block_backward(TowerActs& acts, const TowerShape& s, const BlockParams& p,
                           const T* in, int64_t B);
  // The blocks: forward writes acts.pooled [B, D] (the last block's output at pool_index);
  // backward reads d(pooled) from acts.dpooled and leaves d(input of block 0) in acts.g1.
  void transformer_backward(TowerActs& acts, const TowerShape& s,
                            const std::vector<BlockParams>& blocks,
                            const std::vector<BlockWeights>& weights, const T* x, int64_t B);
  // A tower's projection and final LayerNorm backward, then transformer_backward.
  void pooled_backward(TowerActs& acts, const TowerShape& s, const T* d_features, size_t proj,
                       size_t ln_w, size_t ln_b, const std::vector<BlockParams>& blocks,
                       const std::vector<BlockWeights>& weights, const T* x);

  ModelConfig config_;
  Act act_;
  std::vector<ParamEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<T> params_, grads_;
  size_t total_ = 0;
  TowerShape vshape_{}, tshape_{};
  int64_t patch_ = 0, grid2_ = 0;
  // parameter offsets
  size_t v_conv_, v_cls_, v_pos_, v_lnpre_w_, v_lnpre_b_, v_lnpost_w_, v_lnpost_b_, v_proj_;
  size_t t_tok_, t_pos_, t_lnfin_w_, t_lnfin_b_, t_proj_, logit_scale_offset_;
  static constexpr size_t kNone = ~size_t(0);
  size_t logit_bias_offset_ = kNone;
  void init_logits();
  std::vector<BlockParams> vblocks_, tblocks_;
  // What the forward reads (bind_weights): the blocks' and the towers' other weights.
  std::vector<BlockWeights> vweights_, tweights_;
  struct {
    const T *conv = nullptr, *cls = nullptr, *pos = nullptr, *ln_pre_w = nullptr,
            *ln_pre_b = nullptr, *ln_post_w = nullptr, *ln_post_b = nullptr, *proj = nullptr;
  } vw_;
  struct {
    const T *tok = nullptr, *pos = nullptr, *ln_final_w = nullptr, *ln_final_b = nullptr,
            *proj = nullptr;
  } tw_;
  const T* logit_scale_w_ = nullptr;
  std::vector<PreparedBlock> vprep_, tprep_;  // empty: not prepared
  std::optional<PackedWeight> vconv_prep_;    // the patch embedding, prepared with the blocks
  bool has_image_tower_ = true;
  TowerActs vacts_, tacts_;  // training
  TowerActs vinf_, tinf_;    // inference
  std::unique_ptr<ResNetTower<T>> resnet_;  // the image tower when it is a ResNet
  bool recompute_ = false;
  std::pair<size_t, size_t> vrange_{}, trange_{};
};

// The schema: every tensor of a CLIP checkpoint of this configuration (canonical OpenAI names
// and shapes) in the network's order (image tower, text tower, logit_scale), a ResNet's
// batch-norm running statistics after their layer's bias. Loading (model/weights.h
// expected_tensors), saving, the arenas and `clip info` all derive from it.
std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_schema(
    const ModelConfig& config);

// Prepares a training network's linear layers for the scope of a validation pass (see
// ClipNetwork::prepare) and drops them at its end, before the next optimizer step.
template <typename T>
class InferencePreparation {
 public:
  explicit InferencePreparation(ClipNetwork<T>& net, Precision precision = Precision::F32)
      : net_(net) {
    net_.prepare(precision);
  }
  ~InferencePreparation() { net_.unprepare(); }
  InferencePreparation(const InferencePreparation&) = delete;
  InferencePreparation& operator=(const InferencePreparation&) = delete;

 private:
  ClipNetwork<T>& net_;
};

extern template class ClipNetwork<float>;
extern template class ClipNetwork<double>;

}  // namespace clip::nn
