#include "train/grad_accum.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/test_points.h"

namespace clip::train {

using namespace clip::nn;

template <typename T>
ClipLossResult<T> contrastive_gradients(ClipNetwork<T>& model, const float* pixels,
                                        const int32_t* ids, int64_t N,
                                        const GradientOptions& options) {
  if (N < 1) throw Error("training: empty batch");
  const ModelConfig& c = model.config();
  const int64_t E = c.embed_dim, ctx = c.text.context_length;
  const int64_t image_elems = 3 * int64_t(c.vision.image_size) * c.vision.image_size;
  const int64_t mb = options.micro_batch <= 0 ? N : std::min(options.micro_batch, N);
  test_point("forward");
  model.zero_grad();
  std::vector<T> img(size_t(N * E)), txt(size_t(N * E)), dimg(size_t(N * E)), dtxt(size_t(N * E));
  T dscale = 0;
  if (mb == N) {
    model.forward_image(pixels, N, img.data());
    model.forward_text(ids, N, txt.data());
    test_point("loss");
    auto r = clip_loss<T>(img.data(), txt.data(), N, E, model.logit_scale(), dimg.data(),
                          dtxt.data(), &dscale);
    test_point("backward");
    if (options.train_image) model.backward_image(dimg.data());
    if (options.train_text) model.backward_text(dtxt.data());
    model.logit_scale_grad() = dscale;
    return r;
  }
  // 1. features of every micro-batch
  for (int64_t b = 0; b < N; b += mb) {
    const int64_t n = std::min(mb, N - b);
    model.forward_image(pixels + b * image_elems, n, img.data() + b * E);
    model.forward_text(ids + b * ctx, n, txt.data() + b * E);
  }
  // 2. the loss over the whole batch
  test_point("loss");
  auto r = clip_loss<T>(img.data(), txt.data(), N, E, model.logit_scale(), dimg.data(),
                        dtxt.data(), &dscale);
  // 3. re-run each micro-batch with its rows' feature gradients
  std::vector<T> scratch(size_t(mb * E));
  for (int64_t b = 0; b < N; b += mb) {
    const int64_t n = std::min(mb, N - b);
    if (options.train_image) {
      // The same batch statistics as in pass 1; the running statistics already counted it.
      model.forward_image(pixels + b * image_elems, n, scratch.data(),
                          /*update_running_stats=*/false);
      model.backward_image(dimg.data() + b * E);
    }
    if (options.train_text) {
      model.forward_text(ids + b * ctx, n, scratch.data());
      model.backward_text(dtxt.data() + b * E);
    }
  }
  model.logit_scale_grad() = dscale;
  return r;
}

template ClipLossResult<float> contrastive_gradients<float>(ClipNetwork<float>&, const float*,
                                                            const int32_t*, int64_t,
                                                            const GradientOptions&);
template ClipLossResult<double> contrastive_gradients<double>(ClipNetwork<double>&,
                                                              const float*, const int32_t*,
                                                              int64_t, const GradientOptions&);

}  // namespace clip::train
