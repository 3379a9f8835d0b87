#include "core/ops.h"

#include <cmath>

namespace clip {

void l2_normalize_rows(float* x, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    float* r = x + i * cols;
    double s = 0.0;
    for (int64_t j = 0; j < cols; ++j) s += double(r[j]) * r[j];
    if (s == 0.0) continue;
    const float inv = float(1.0 / std::sqrt(s));
    for (int64_t j = 0; j < cols; ++j) r[j] *= inv;
  }
}

}  // namespace clip
