// The contrastive loss's memory and time at a large global batch (issue 18: "peak RSS per rank
// at global batch 4,096 with and without local loss"). Each run is its own process so that its
// peak RSS is the loss's: the gathered features of the global batch plus what the loss holds
// (without local loss every rank computes all N x N: four N x N matrices in double; with it,
// one of W ranks four N/W x N). Everything else a rank holds (its towers' activations for its
// N/W rows) is the same with and without the local loss.
//
//   bench_train_loss --rss N E W     W = 1: the whole N x N loss; W > 1: one rank's share
//                                    (clip_loss_rows of N / W rows); prints peak RSS and time
//   bench_train_loss                 Google Benchmark timings at small N
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "train/loss.h"

namespace {

std::vector<float> features(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

int rss_probe(int64_t N, int64_t E, int64_t W) {
  const std::vector<float> img = features(N * E, 1), txt = features(N * E, 2);
  std::vector<float> di(size_t(N * E)), dt(size_t(N * E));
  float ds = 0;
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const auto t0 = std::chrono::steady_clock::now();
  double loss;
  // W = 1: all N rows (what every rank computes without local loss); else one rank's N / W.
  loss = clip::train::clip_loss_rows<float>(img.data(), txt.data(), N, E, 2.6592f, 0, N / std::max<int64_t>(W, 1),
                                            di.data(), dt.data(), &ds)
             .loss;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  std::printf("N %lld, E %lld, %s: peak RSS %.1f MiB (%.1f MiB before the loss: the features), loss %.4f, %.1f s\n",
              static_cast<long long>(N), static_cast<long long>(E),
              W <= 1 ? "whole loss (one process, or every rank without local loss)"
                     : ("local loss of one of " + std::to_string(W) + " ranks").c_str(),
              double(after.ru_maxrss) / 1024, double(before.ru_maxrss) / 1024, loss, seconds);
  return 0;
}

void BM_ClipLoss(benchmark::State& state) {
  const int64_t N = state.range(0), E = 512, W = state.range(1);
  const std::vector<float> img = features(N * E, 1), txt = features(N * E, 2);
  std::vector<float> di(size_t(N * E)), dt(size_t(N * E));
  float ds = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        clip::train::clip_loss_rows<float>(img.data(), txt.data(), N, E, 2.6f, 0, N / W, di.data(), dt.data(), &ds));
  }
}
BENCHMARK(BM_ClipLoss)->Args({256, 1})->Args({256, 2})->Args({256, 8})->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--rss") == 0)
    return rss_probe(std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
