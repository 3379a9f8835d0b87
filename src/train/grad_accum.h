#pragma once
// The gradient of the contrastive loss over a whole batch, computed in micro-batches so that
// a large batch fits in little activation memory, WITHOUT changing the loss: the contrastive
// loss couples every image with every text, so per-micro-batch losses would be a different
// (weaker) objective. Instead (the "cached features" scheme of GradCache / open_clip's
// --accum-freq):
//   1. run every micro-batch forward through both towers without keeping its activations
//      for long, caching only the features [N, E];
//   2. compute the full N x N loss from the cached features, and its gradient with respect
//      to every feature row and to logit_scale;
//   3. run each micro-batch forward again (keeping activations) and back-propagate the
//      cached feature gradients of its rows into the parameter gradients (which add up).
// The result equals the single-big-batch gradient up to float rounding; with one micro-batch
// (micro_batch <= 0 or >= N) the forward runs once.
#include <cstdint>

#include "backend/comm.h"
#include "nn/clip_network.h"
#include "train/loss.h"

namespace clip::train {

// Training is built on the networks (src/nn): their names are used here unqualified.
using namespace clip::nn;

struct GradientOptions {
  int64_t micro_batch = 0;   // rows per micro-batch; <= 0: the whole batch at once
  bool train_image = true;   // false: the image tower is frozen (no backward, no grads)
  bool train_text = true;    // false: the text tower is frozen
  // Data parallel (issue 18): with a communicator of W > 1 ranks, each rank passes its own N
  // rows of a global batch of W N (rank r: rows r N .. r N + N - 1). Features are all-gathered
  // (gather-with-grad), each rank computes the loss share of its rows against all W N
  // (local loss, clip_loss_rows), the feature gradients are summed back to the ranks that
  // own them (reduce-scatter), and the parameter gradients are summed over ranks: every rank
  // ends with the gradient of the global batch's loss, as one process with micro-batches of
  // N would compute it (BatchNorm statistics are per rank, i.e. per micro-batch). Null: one
  // process (Comm::self(): the same code, collectives are copies).
  Comm* comm = nullptr;
  // With comm: each rank computes the loss of its own rows only (open_clip's local_loss);
  // false: every rank the whole batch's (same gradient, W times the loss memory).
  bool local_loss = true;
};

// Zeroes the model's gradients, then fills them with d(loss)/d(parameters) for the batch
// pixels [N, 3, S, S], ids [N, context_length]. Returns the loss (the global batch's, on
// every rank, when data parallel).
template <typename T>
ClipLossResult<T> contrastive_gradients(ClipNetwork<T>& model, const float* pixels,
                                        const int32_t* ids, int64_t N,
                                        const GradientOptions& options = {});

}  // namespace clip::train
