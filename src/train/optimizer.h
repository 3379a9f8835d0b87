#pragma once
// Optimisation pieces of CLIP training, each matching the reference used by open_clip:
//   * AdamW exactly as torch.optim.AdamW (PyTorch 1.13, single-tensor path): decoupled decay
//     p *= 1 - lr*wd applied before the moment updates, bias-corrected moments,
//     p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps);
//     two parameter groups: weight_decay for the parameters with ParamEntry::weight_decay,
//     0 for the rest (see excluded_from_weight_decay in clip_trainable.h);
//   * open_clip's cosine_lr schedule (linear warm-up, then cosine decay to 0);
//   * torch.nn.utils.clip_grad_norm_ (global L2 norm over all trained gradients);
//   * the logit_scale clamp to [0, ln 100] after every step.
#include <cstdint>
#include <vector>

#include "nn/clip_network.h"

namespace clip::train {

// Training is built on the networks (src/nn): their names are used here unqualified.
using namespace clip::nn;

struct AdamWConfig {
  double lr = 5e-4;  // base learning rate (the schedule scales it per step)
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  double weight_decay = 0.2;
};

// open_clip's cosine_lr: step < warmup: base * (step + 1) / warmup; afterwards
// 0.5 * (1 + cos(pi * e / es)) * base with e = step - warmup, es = total_steps - warmup.
double cosine_lr(double base_lr, int64_t warmup_steps, int64_t total_steps, int64_t step);

// Scales the gradients of the given element ranges so that their global L2 norm is at most
// max_norm, as clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when coef < 1.
// Returns the norm before clipping. max_norm <= 0 only measures.
template <typename T>
double clip_grad_norm(T* grads, const std::vector<std::pair<size_t, size_t>>& ranges,
                      double max_norm);

// ln(100): the largest logit_scale (a temperature of 1/100).
inline constexpr double kMaxLogitScale = 4.605170185988092;

template <typename T>
class AdamW {
 public:
  AdamW(ClipNetwork<T>& model, const AdamWConfig& config);
  const AdamWConfig& config() const { return config_; }
  // A frozen tower is neither updated nor counted (its moments stay untouched).
  void set_frozen(Tower tower, bool frozen);
  bool frozen(Tower tower) const { return frozen_[int(tower)]; }
  // Element ranges of the parameters being trained (for clip_grad_norm).
  std::vector<std::pair<size_t, size_t>> trained_ranges() const;
  // One update of every trained parameter with learning rate `lr` from the model's grads,
  // then the logit_scale clamp to [0, ln 100].
  void step(double lr);
  int64_t steps() const { return steps_; }
  // Restores the step counter t of the bias corrections (resuming from a checkpoint).
  void set_steps(int64_t steps) { steps_ = steps; }
  std::vector<T>& exp_avg() { return m_; }
  std::vector<T>& exp_avg_sq() { return v_; }
  const std::vector<T>& exp_avg() const { return m_; }
  const std::vector<T>& exp_avg_sq() const { return v_; }

 private:
  ClipNetwork<T>& model_;
  AdamWConfig config_;
  std::vector<T> m_, v_;  // same layout as the parameter arena
  bool frozen_[3] = {false, false, false};
  int64_t steps_ = 0;
};

extern template class AdamW<float>;
extern template class AdamW<double>;

}  // namespace clip::train
