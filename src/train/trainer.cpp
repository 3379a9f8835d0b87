#include "train/trainer.h"

#include "core/test_points.h"

namespace clip::train {

using namespace clip::nn;

template <typename T>
Trainer<T>::Trainer(ClipNetwork<T>& model, const TrainConfig& config)
    : model_(model), config_(config), optimizer_(model, config.adamw) {
  optimizer_.set_frozen(Tower::Image, config.freeze_image);
  optimizer_.set_frozen(Tower::Text, config.freeze_text);
  // A frozen ResNet image tower is a fixed function: its batch norms use (and keep) their
  // running statistics, as open_clip's lock_image(freeze_bn_stats=True).
  if (config.freeze_image) model.set_image_training(false);
}

template <typename T>
StepStats Trainer<T>::step(const float* pixels, const int32_t* ids, int64_t N) {
  StepStats s;
  s.step = step_;
  s.lr = cosine_lr(config_.adamw.lr, config_.warmup_steps, config_.total_steps, step_);
  GradientOptions go;
  go.micro_batch = config_.micro_batch;
  go.train_image = !config_.freeze_image;
  go.train_text = !config_.freeze_text;
  go.comm = config_.comm;
  go.local_loss = config_.local_loss;
  const ClipLossResult<T> r = contrastive_gradients(model_, pixels, ids, N, go);
  s.loss = r.loss;
  s.comm_seconds = r.comm_seconds;
  s.grad_norm = clip_grad_norm(model_.grads(), optimizer_.trained_ranges(), config_.max_grad_norm);
  test_point("optimizer");
  optimizer_.step(s.lr);
  s.logit_scale = double(model_.logit_scale());
  ++step_;
  return s;
}

template class Trainer<float>;
template class Trainer<double>;

}  // namespace clip::train
