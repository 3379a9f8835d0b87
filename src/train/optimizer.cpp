#include "train/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cpu_features.h"
#include "core/error.h"
#include "backend/vector_kernels.h"

namespace clip::train {

using namespace clip::nn;


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
  // Sum of squares in double, eight independent partial sums per thread (vectorisable) over a
  // static split: deterministic for a given thread count.
  auto sum_sq = [&](size_t i0, size_t i1) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = i0;
    for (; i + 8 <= i1; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += double(grads[i + k]) * double(grads[i + k]);
    double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < i1; ++i) s += double(grads[i]) * double(grads[i]);
    return s;
  };
  double sq = 0;
  for (auto [b, e] : ranges) {
    if (e - b > (size_t(1) << 17)) {
      std::vector<double> part(size_t(omp_get_max_threads()), 0.0);
#pragma omp parallel
      {
        const size_t t = size_t(omp_get_thread_num()), nt = size_t(omp_get_num_threads()), n = e - b;
        part[t] = sum_sq(b + n * t / nt, b + n * (t + 1) / nt);
      }
      for (double x : part) sq += x;  // in thread order (an OpenMP reduction's order is not fixed)
    } else {
      sq += sum_sq(b, e);
    }
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
AdamW<T>::AdamW(ClipNetwork<T>& model, const AdamWConfig& config)
    : model_(model), config_(config), m_(model.num_params(), T(0)), v_(model.num_params(), T(0)) {
  auto bad = [](const char* name, double v, const char* rule) {
    return Error(std::string("training: AdamW ") + name + " = " + std::to_string(v) + ": must be " + rule);
  };
  if (!(config.lr >= 0)) throw bad("learning rate", double(config.lr), ">= 0");
  if (!(config.beta1 >= 0 && config.beta1 < 1)) throw bad("beta1", double(config.beta1), "in [0, 1)");
  if (!(config.beta2 >= 0 && config.beta2 < 1)) throw bad("beta2", double(config.beta2), "in [0, 1)");
  if (!(config.eps > 0)) throw bad("eps", double(config.eps), "> 0");
  if (!(config.weight_decay >= 0)) throw bad("weight decay", double(config.weight_decay), ">= 0");
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
  T* m = m_.data();
  T* v = v_.data();
  for (const ParamEntry& e : model_.parameters()) {
    if (frozen_[int(e.tower)]) continue;
    const T decay = T(1.0 - lr * (e.weight_decay ? config_.weight_decay : 0.0));
    const int64_t b = int64_t(e.offset), end = int64_t(e.offset + e.numel);
    // The scalar update, element by element, in torch's order of operations (no fused
    // multiply-adds: the build has -ffp-contract=off, so this is the same on every CPU; the
    // AVX2 lanes fuse three of them, a difference of one rounding in the last bit).
    auto scalar = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        p[i] = p[i] * decay;
        m[i] = m[i] * beta1;
        m[i] = m[i] + one_minus_beta1 * g[i];
        v[i] = v[i] * beta2;
        v[i] = v[i] + one_minus_beta2 * g[i] * g[i];
        const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + step_size_neg * (m[i] / denom);
      }
    };
    auto range = [&](int64_t i0, int64_t i1) {
      if constexpr (std::is_same_v<T, float>) {
        // GCC does not vectorise the scalar loop itself because of std::sqrt's errno path.
        if (cpu_use_avx2())
          i0 = backend::adamw_avx2(p, g, m, v, i0, i1,
                                   backend::AdamScalars{decay, beta1, one_minus_beta1, beta2,
                                                        one_minus_beta2, bc2_sqrt, eps,
                                                        step_size_neg});
      }
      scalar(i0, i1);
    };
    if (e.numel > (size_t(1) << 17)) {
#pragma omp parallel
      {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads(), n = end - b;
        range(b + (n * t / nt) / 8 * 8, t + 1 == nt ? end : b + (n * (t + 1) / nt) / 8 * 8);
      }
    } else {
      range(b, end);
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
