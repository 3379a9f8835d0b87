#pragma once
// Row operations on embeddings (the features the encoders return). The networks' kernels are
// in nn/layers.h, each a forward/backward pair.
#include <cstdint>

namespace clip {

// Each row of x[rows, cols] divided by its L2 norm (rows of zeros stay zero).
void l2_normalize_rows(float* x, int64_t rows, int64_t cols);

}  // namespace clip
