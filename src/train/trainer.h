#pragma once
// One optimisation step of CLIP training, in open_clip's order:
//   lr = cosine_lr(step); gradients of the whole-batch contrastive loss (micro-batched when
//   asked, see grad_accum.h); global-norm clipping; AdamW step; logit_scale clamp.
// Freezing a tower (locked-image tuning: freeze_image) skips its backward pass and its
// updates; logit_scale is always trained.
#include <cstdint>

#include "nn/clip_network.h"
#include "train/grad_accum.h"
#include "train/optimizer.h"

namespace clip::train {

// Training is built on the networks (src/nn): their names are used here unqualified.
using namespace clip::nn;

struct TrainConfig {
  AdamWConfig adamw;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double max_grad_norm = 0;   // <= 0: no clipping (the norm is still reported)
  int64_t micro_batch = 0;    // <= 0: the whole batch in one pass
  bool freeze_image = false;
  bool freeze_text = false;
  // Data parallel: step() gets this rank's rows of each global batch (GradientOptions::comm).
  Comm* comm = nullptr;
  bool local_loss = true;  // GradientOptions::local_loss
};

struct StepStats {
  int64_t step = 0;      // index of this step (0-based)
  double loss = 0;       // before the update
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double logit_scale = 0;  // after the update and clamp
  double comm_seconds = 0;  // data parallel: time in collectives this step
};

template <typename T>
class Trainer {
 public:
  Trainer(ClipNetwork<T>& model, const TrainConfig& config);
  StepStats step(const float* pixels, const int32_t* ids, int64_t N);
  int64_t steps_done() const { return step_; }
  // Restores the step counter (the schedule's position) when resuming from a checkpoint; the
  // optimizer's own counter is restored separately (optimizer().set_steps).
  void set_steps_done(int64_t steps) { step_ = steps; }
  const TrainConfig& config() const { return config_; }
  AdamW<T>& optimizer() { return optimizer_; }

 private:
  ClipNetwork<T>& model_;
  TrainConfig config_;
  AdamW<T> optimizer_;
  int64_t step_ = 0;
};

extern template class Trainer<float>;
extern template class Trainer<double>;

}  // namespace clip::train
