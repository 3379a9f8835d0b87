// One training step of the ModifiedResNet image tower (nn/resnet_tower.h): forward in
// training mode (batch statistics, running-statistics update), the contrastive loss against
// fixed random text features, backward into the parameter gradients. No optimizer (AdamW is
// elementwise over the parameters: ~40 ms for RN50's 38M, next to seconds of convolutions).
// tools/bench_torch_train_resnet.py times the same step in PyTorch.
// One untimed warm-up step plans the activation arena (page faults) and creates the
// backend's kernels. Counters: samples/s, median_ms / best_ms per step, forward_ms and
// backward_ms (medians), activation_MB, peak_RSS_MB. Run on a quiet machine with
// OMP_WAIT_POLICY=PASSIVE:
//   ninja -C build bench_train_resnet && ./build/bench/bench_train_resnet --benchmark_filter=Tiny
//   ./build/bench/bench_train_resnet --benchmark_filter=RN50   (RN50 at batch 32: ~4 GB)
// CLIP_TRAIN_STEPS=n fixes the number of timed steps.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <vector>

#include "train/loss.h"
#include "nn/resnet_tower.h"
#include "train_bench_main.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;

namespace {

VisionConfig resnet(std::vector<int> layers, int width, int image_size) {
  VisionConfig v;
  v.resnet_layers = std::move(layers);
  v.width = width;
  v.image_size = image_size;
  v.heads = width * 32 / 64;
  v.patch_size = 0;
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run(benchmark::State& state, const VisionConfig& v, int64_t E, int64_t N) {
  ResNetTower<float> tower(v, E);
  tower.init_openai(1);
  std::mt19937 gen(1);
  std::normal_distribution<float> d;
  std::vector<float> pixels(size_t(N * 3 * v.image_size * v.image_size)), text(size_t(N * E));
  for (auto& p : pixels) p = d(gen);
  for (auto& t : text) t = d(gen);
  std::vector<float> feat(size_t(N * E)), dfeat(feat.size());
  using Clock = std::chrono::steady_clock;
  std::vector<double> fwd, bwd, total;
  auto step = [&] {
    const auto t0 = Clock::now();
    tower.zero_grad();
    tower.forward(pixels.data(), N, feat.data());
    const auto t1 = Clock::now();
    const auto r = clip_loss<float>(feat.data(), text.data(), N, E, 2.659f, dfeat.data(), nullptr, nullptr);
    tower.backward(dfeat.data());
    const auto t2 = Clock::now();
    benchmark::DoNotOptimize(r.loss);
    fwd.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    bwd.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    total.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  };
  step();  // warm-up
  fwd.clear();
  bwd.clear();
  total.clear();
  for (auto _ : state) step();
  state.counters["samples/s"] =
      benchmark::Counter(double(N) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["median_ms"] = median(total);
  state.counters["best_ms"] = *std::min_element(total.begin(), total.end());
  state.counters["forward_ms"] = median(fwd);
  state.counters["backward_ms"] = median(bwd);
  state.counters["activation_MB"] = double(tower.activation_bytes()) / 1e6;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_RSS_MB"] = double(ru.ru_maxrss) / 1024.0;
}

// tests/data/train/resnet_grad.safetensors' configuration.
void BM_TrainResNetTiny(benchmark::State& s) { run(s, resnet({2, 1, 1, 1}, 4, 64), 16, 4); }
void BM_TrainResNetRN50Batch32(benchmark::State& s) { run(s, resnet({3, 4, 6, 3}, 64, 224), 1024, 32); }
void BM_TrainResNetRN50Batch8(benchmark::State& s) { run(s, resnet({3, 4, 6, 3}, 64, 224), 1024, 8); }

}  // namespace

int main(int argc, char** argv) {
  return clip::bench::run_train_benchmarks(argc, argv, {
      {"BM_TrainResNetTiny", BM_TrainResNetTiny, benchmark::kMillisecond, 0},
      {"BM_TrainResNetRN50Batch8", BM_TrainResNetRN50Batch8, benchmark::kSecond, 3},
      {"BM_TrainResNetRN50Batch32", BM_TrainResNetRN50Batch32, benchmark::kSecond, 3},
  });
}
