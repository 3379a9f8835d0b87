#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace clip::train {

double cosine_lr(double base_lr, int64_t warmup_steps, int64_t total_steps, int64_t step) {
  if (step < warmup_steps) return base_lr * double(step + 1) / double(warmup_steps);
  const double e = double(step - warmup_steps);
  const double es = double(total_steps - warmup_steps);
  if (es <= 0) return 0.0;  // past a schedule with no decay phase
  return 0.5 * (1.0 + std::cos(M_PI * e / es)) * base_lr;
}

template <typename T>
double clip_grad_norm(T* grads, const std::vector<std::pair<size_t, size_t>>& ranges,
                      double max_norm) {
  double sq = 0;
  for (auto [b, e] : ranges) {
#pragma omp parallel for reduction(+ : sq) if (e - b > (size_t(1) << 17))
    for (size_t i = b; i < e; ++i) sq += double(grads[i]) * double(grads[i]);
  }
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm)) throw Error("training: the gradient norm is not finite");
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
      const T c = T(coef);
      for (auto [b, e] : ranges) {
#pragma omp parallel for if (e - b > (size_t(1) << 17))
        for (size_t i = b; i < e; ++i) grads[i] *= c;
      }
    }
  }
  return norm;
}

template <typename T>
AdamW<T>::AdamW(TrainableClip<T>& model, const AdamWConfig& config)
    : model_(model), config_(config), m_(model.num_params(), T(0)), v_(model.num_params(), T(0)) {
  if (!(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1 &&
        config.eps > 0 && config.weight_decay >= 0 && config.lr >= 0))
    throw Error("training: invalid AdamW hyper-parameters");
}

template <typename T>
void AdamW<T>::set_frozen(Tower tower, bool frozen) {
  frozen_[int(tower)] = frozen;
}

template <typename T>
std::vector<std::pair<size_t, size_t>> AdamW<T>::trained_ranges() const {
  std::vector<std::pair<size_t, size_t>> r;
  for (Tower t : {Tower::Image, Tower::Text, Tower::Shared})
    if (!frozen_[int(t)]) r.push_back(model_.tower_range(t));
  return r;
}

template <typename T>
void AdamW<T>::step(double lr) {
  ++steps_;
  const double bias_correction1 = 1.0 - std::pow(config_.beta1, double(steps_));
  const double bias_correction2 = 1.0 - std::pow(config_.beta2, double(steps_));
  // The scalars as torch applies them to a float tensor (each rounded to T).
  const T step_size_neg = T(-(lr / bias_correction1));
  const T bc2_sqrt = T(std::sqrt(bias_correction2));
  const T beta1 = T(config_.beta1), one_minus_beta1 = T(1.0 - config_.beta1);
  const T beta2 = T(config_.beta2), one_minus_beta2 = T(1.0 - config_.beta2);
  const T eps = T(config_.eps);
  T* p = model_.params();
  const T* g = model_.grads();
  for (const ParamEntry& e : model_.parameters()) {
    if (frozen_[int(e.tower)]) continue;
    const T decay = T(1.0 - lr * (e.weight_decay ? config_.weight_decay : 0.0));
    const size_t b = e.offset, end = e.offset + e.numel;
#pragma omp parallel for if (e.numel > (size_t(1) << 17))
    for (size_t i = b; i < end; ++i) {
      p[i] = p[i] * decay;
      m_[i] = m_[i] * beta1;
      m_[i] = m_[i] + one_minus_beta1 * g[i];
      v_[i] = v_[i] * beta2;
      v_[i] = v_[i] + one_minus_beta2 * g[i] * g[i];
      const T denom = std::sqrt(v_[i]) / bc2_sqrt + eps;
      p[i] = p[i] + step_size_neg * (m_[i] / denom);
    }
  }
  if (!frozen_[int(Tower::Shared)]) {
    T& t = model_.logit_scale_ref();
    t = std::clamp(t, T(0), T(kMaxLogitScale));
  }
}

template double clip_grad_norm<float>(float*, const std::vector<std::pair<size_t, size_t>>&, double);
template double clip_grad_norm<double>(double*, const std::vector<std::pair<size_t, size_t>>&, double);
template class AdamW<float>;
template class AdamW<double>;

}  // namespace clip::train
