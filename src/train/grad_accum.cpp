#include "train/grad_accum.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/error.h"
#include "core/test_points.h"

namespace clip::train {

using namespace clip::nn;

namespace {
// The loss of image rows [row0, row0 + rows) (all of them: row0 = 0, rows = N) against all N
// texts, the gradients of all N feature rows, and the logit parameters' gradients set: CLIP's
// softmax loss, or SigLIP's sigmoid loss for a model with a logit bias.
template <typename T>
ClipLossResult<T> loss_and_feature_gradients(ClipNetwork<T>& model, const T* img, const T* txt, int64_t N, int64_t E,
                                             int64_t row0, int64_t rows, T* dimg, T* dtxt) {
  T dscale = 0;
  ClipLossResult<T> r;
  if (model.has_logit_bias()) {
    T dbias = 0;
    r.loss = siglip_loss_rows<T>(img, txt, N, E, model.logit_scale(), model.logit_bias(), row0, rows, dimg, dtxt,
                                 &dscale, &dbias).loss;
    model.logit_bias_grad() = dbias;
  } else {
    r = clip_loss_rows<T>(img, txt, N, E, model.logit_scale(), row0, rows, dimg, dtxt, &dscale);
  }
  model.logit_scale_grad() = dscale;
  return r;
}

// contrastive_gradients on the ranks of `comm` (see GradientOptions::comm); one process is a
// world of one, where every collective is a copy.
template <typename T>
ClipLossResult<T> gradients_on(Comm& comm, ClipNetwork<T>& model, const float* pixels, const int32_t* ids, int64_t N,
                               int64_t mb, const GradientOptions& options) {
  double comm_seconds = 0;
  auto timed = [&comm_seconds](auto&& collective) {
    const auto t0 = std::chrono::steady_clock::now();
    collective();
    comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const ModelConfig& c = model.config();
  const int64_t E = c.embed_dim, ctx = c.text.context_length;
  const int64_t image_elems = 3 * int64_t(c.vision.image_size) * c.vision.image_size;
  const int64_t W = comm.size(), global = W * N, row0 = int64_t(comm.rank()) * N;
  std::vector<T> img(size_t(N * E)), txt(size_t(N * E));
  // 1. this rank's features (kept activations when it runs in one pass)
  for (int64_t b = 0; b < N; b += mb) {
    const int64_t n = std::min(mb, N - b);
    model.forward_image(pixels + b * image_elems, n, img.data() + b * E);
    model.forward_text(ids + b * ctx, n, txt.data() + b * E);
  }
  std::vector<T> dimg(size_t(N * E), T(0)), dtxt(size_t(N * E), T(0));
  ClipLossResult<T> r;
  if (model.has_logit_bias()) {
    // 2-3. SigLIP, the open_clip way: text features travel around the ring of ranks (with the
    //      gradient they collect), each rank scoring its images against every block (its own
    //      block holds the positives; the others only negatives), so no rank holds more than
    //      two blocks; a last step brings each block's gradient home.
    test_point("loss");
    const int64_t NE = N * E;
    std::vector<T> block = txt, block_grad(static_cast<size_t>(NE), T(0)), incoming(static_cast<size_t>(NE)),
        incoming_grad(static_cast<size_t>(NE));
    double dt = 0, db = 0;
    double total = siglip_loss_block<T>(img.data(), N, block.data(), N, E, model.logit_scale(), model.logit_bias(), 0,
                                        global, dimg.data(), block_grad.data(), &dt, &db);
    for (int64_t hop = 1; hop < W; ++hop) {
      timed([&] {
        comm.ring_shift(block.data(), incoming.data(), NE);
        comm.ring_shift(block_grad.data(), incoming_grad.data(), NE);
      });
      block.swap(incoming);
      block_grad.swap(incoming_grad);
      total += siglip_loss_block<T>(img.data(), N, block.data(), N, E, model.logit_scale(), model.logit_bias(),
                                    /*no positives*/ N, global, dimg.data(), block_grad.data(), &dt, &db);
    }
    timed([&] { comm.ring_shift(block_grad.data(), dtxt.data(), NE); });
    model.logit_scale_grad() = T(dt);
    model.logit_bias_grad() = T(db);
    r.loss = total / double(N);
  } else {
    // 2. every rank's features, this rank's share of the loss and its gradient for all of them
    std::vector<T> all_img(size_t(global * E)), all_txt(size_t(global * E));
    timed([&] {
      comm.allgather(img.data(), N * E, all_img.data());
      comm.allgather(txt.data(), N * E, all_txt.data());
    });
    test_point("loss");
    std::vector<T> d_all_img(all_img.size()), d_all_txt(all_txt.size());
    if (options.local_loss) {
      r = loss_and_feature_gradients<T>(model, all_img.data(), all_txt.data(), global, E, row0, N, d_all_img.data(),
                                        d_all_txt.data());
    } else {
      // Every rank the whole W N x W N loss (O(N^2) memory); its gradient, counted once per rank
      // by the sums below, is divided by W.
      r = loss_and_feature_gradients<T>(model, all_img.data(), all_txt.data(), global, E, 0, global, d_all_img.data(),
                                        d_all_txt.data());
      const T inv = T(1) / T(W);
      for (T& g : d_all_img) g *= inv;
      for (T& g : d_all_txt) g *= inv;
      model.logit_scale_grad() *= inv;
    }
    // 3. the gradients of this rank's features, summed over every rank's share
    timed([&] {
      comm.reduce_scatter_sum(d_all_img.data(), N * E, dimg.data());
      comm.reduce_scatter_sum(d_all_txt.data(), N * E, dtxt.data());
    });
  }
  test_point("backward");
  // 3. back-propagation, the image tower first: the sum of its gradients over the ranks (the
  //    first bucket) starts while the text tower's backward runs (Comm's helper thread drives
  //    it); then the second bucket (text tower, logit parameters). comm_s counts the waits.
  //    In one pass the towers kept their activations; with micro-batches each is re-run
  //    (forward(b, n)) before its backward.
  std::vector<T> scratch(size_t(mb * E));
  auto backward_tower = [&](const std::vector<T>& d_features, auto&& forward, auto&& backward) {
    if (mb == N) return backward(d_features.data());
    for (int64_t b = 0; b < N; b += mb) {
      forward(b, std::min(mb, N - b));
      backward(d_features.data() + b * E);
    }
  };
  if (options.train_image)
    backward_tower(
        dimg,
        [&](int64_t b, int64_t n) {
          // The same batch statistics as in pass 1; the running statistics already counted it.
          model.forward_image(pixels + b * image_elems, n, scratch.data(), /*update_running_stats=*/false);
        },
        [&](const T* d) { model.backward_image(d); });
  const auto [image_begin, image_end] = model.tower_range(Tower::Image);
  const int64_t total = int64_t(model.num_params());
  const bool image_first = image_begin == 0;  // the arena's layout: image, text, shared
  if (image_first) comm.start_allreduce_sum(model.grads(), int64_t(image_end));
  if (options.train_text)
    backward_tower(
        dtxt, [&](int64_t b, int64_t n) { model.forward_text(ids + b * ctx, n, scratch.data()); },
        [&](const T* d) { model.backward_text(d); });
  // 4. the parameter gradients of every rank's rows (the logit parameters' shares too), summed
  double losses[3] = {r.loss, r.loss_image_to_text, r.loss_text_to_image};
  timed([&] {
    if (image_first)
      comm.allreduce_sum(model.grads() + image_end, total - int64_t(image_end));
    else
      comm.allreduce_sum(model.grads(), total);
    comm.wait_all();
    comm.allreduce_sum(losses, 3);
  });
  r.comm_seconds = comm_seconds;
  r.loss = losses[0] / double(W);
  r.loss_image_to_text = losses[1] / double(W);
  r.loss_text_to_image = losses[2] / double(W);
  return r;
}
}  // namespace

template <typename T>
ClipLossResult<T> contrastive_gradients(ClipNetwork<T>& model, const float* pixels,
                                        const int32_t* ids, int64_t N,
                                        const GradientOptions& options) {
  if (N < 1) throw Error("training: empty batch");
  const int64_t mb = options.micro_batch <= 0 ? N : std::min(options.micro_batch, N);
  test_point("forward");
  model.zero_grad();
  return gradients_on(options.comm ? *options.comm : Comm::self(), model, pixels, ids, N, mb, options);
}

template ClipLossResult<float> contrastive_gradients<float>(ClipNetwork<float>&, const float*,
                                                            const int32_t*, int64_t,
                                                            const GradientOptions&);
template ClipLossResult<double> contrastive_gradients<double>(ClipNetwork<double>&,
                                                              const float*, const int32_t*,
                                                              int64_t, const GradientOptions&);

}  // namespace clip::train
