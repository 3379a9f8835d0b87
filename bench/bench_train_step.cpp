// One CLIP training step (forward + contrastive loss + backward + clipping + AdamW) on the
// CPU: the tiny configuration of the reference test (batch 6 and 64), the CIFAR-10 recipe's
// model sizes, and a ViT-B/32-sized model at batch 32 (randomly initialised; ~4.5 GB for
// parameters, gradients, Adam moments and activations).
// One untimed warm-up step plans the activation arenas (their first touch is page faults);
// then every step is timed. Counters: samples/s (mean over the timed steps), median_ms and
// best_ms per step, cpu_ms (CPU time of all threads per step), activation_MB, and peak_RSS_MB (getrusage: the process's peak so far, so
// run one benchmark per process to read it for that configuration, as
// tools/bench_torch_train.py does). Run on a quiet machine with OMP_WAIT_POLICY=PASSIVE:
//   ninja -C build bench_train_step && ./build/bench/bench_train_step
//   ./build/bench/bench_train_step --benchmark_filter=Tiny      (seconds)
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <vector>

#include "train/trainer.h"
#include "train_bench_main.h"

using namespace clip;
using namespace clip::train;
using namespace clip::nn;

namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.embed_dim = 24;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.vision.width = 40;
  c.vision.heads = 2;
  c.vision.layers = 2;
  c.vision.mlp_dim = 160;
  c.text.context_length = 16;
  c.text.vocab_size = 100;
  c.text.width = 32;
  c.text.heads = 2;
  c.text.layers = 2;
  c.text.mlp_dim = 128;
  return c;
}

// The size of the CIFAR-10 recipe's model (configs/cifar10-vit.json): 32 px, patch 4.
ModelConfig cifar(int width, int layers, int text_width = 256, int text_layers = 4, int ctx = 24) {
  ModelConfig c;
  c.embed_dim = 256;
  c.vision.image_size = 32;
  c.vision.patch_size = 4;
  c.vision.width = width;
  c.vision.heads = width / 64;
  c.vision.layers = layers;
  c.vision.mlp_dim = 4 * width;
  c.text.context_length = ctx;
  c.text.vocab_size = 2048;
  c.text.width = text_width;
  c.text.heads = text_width / 64;
  c.text.layers = text_layers;
  c.text.mlp_dim = 4 * text_width;
  return c;
}

ModelConfig vit_b32() {
  ModelConfig c;  // the defaults of ModelConfig are ViT-B/32's text tower
  c.embed_dim = 512;
  c.vision.image_size = 224;
  c.vision.patch_size = 32;
  c.vision.width = 768;
  c.vision.heads = 12;
  c.vision.layers = 12;
  c.vision.mlp_dim = 3072;
  return c;
}

void run(benchmark::State& state, const ModelConfig& c, int64_t N, int64_t micro, bool recompute) {
  ClipNetwork<float> model(c);
  model.init_openai(1);
  model.set_recompute(recompute);
  TrainConfig tc;
  tc.adamw.lr = 1e-4;
  tc.total_steps = 1000;
  tc.warmup_steps = 10;
  tc.max_grad_norm = 1.0;
  tc.micro_batch = micro;
  Trainer<float> trainer(model, tc);
  std::mt19937 gen(1);
  std::normal_distribution<float> d;
  std::vector<float> pixels(size_t(N * 3 * c.vision.image_size * c.vision.image_size));
  for (auto& p : pixels) p = d(gen);
  const int L = c.text.context_length;
  std::vector<int32_t> ids(size_t(N * L), 0);
  for (int64_t b = 0; b < N; ++b) {
    const int len = 2 + int(b % (L - 1));
    ids[b * L] = c.text.vocab_size - 2;
    for (int l = 1; l < len - 1; ++l) ids[b * L + l] = 1 + int(gen() % uint32_t(c.text.vocab_size - 3));
    ids[b * L + len - 1] = c.text.vocab_size - 1;
  }
  benchmark::DoNotOptimize(trainer.step(pixels.data(), ids.data(), N).loss);  // warm-up
  auto process_cpu_ms = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return 1e3 * double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-3 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  };
  const double cpu0 = process_cpu_ms();
  std::vector<double> ms;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats s = trainer.step(pixels.data(), ids.data(), N);
    benchmark::DoNotOptimize(s.loss);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  // CPU time of all threads per step: a load-independent measure of the work on a shared
  // machine (wall time there mostly measures the other jobs).
  state.counters["cpu_ms"] = (process_cpu_ms() - cpu0) / double(ms.size());
  std::sort(ms.begin(), ms.end());
  state.counters["samples/s"] =
      benchmark::Counter(double(N) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["median_ms"] = ms[ms.size() / 2];
  state.counters["best_ms"] = ms.front();
  state.counters["activation_MB"] = double(model.activation_bytes()) / 1e6;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_RSS_MB"] = double(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

void BM_TrainStepTiny(benchmark::State& s) { run(s, tiny(), 6, 0, false); }
void BM_TrainStepTinyBatch64(benchmark::State& s) { run(s, tiny(), 64, 0, false); }
void BM_TrainStepTinyMicro2Recompute(benchmark::State& s) { run(s, tiny(), 6, 2, true); }
void BM_TrainStepCifarW256L6Batch256(benchmark::State& s) { run(s, cifar(256, 6), 256, 0, false); }
void BM_TrainStepCifarW192L6Batch256(benchmark::State& s) { run(s, cifar(192, 6), 256, 0, false); }
void BM_TrainStepCifarW128L4Batch128(benchmark::State& s) { run(s, cifar(128, 4, 128, 3, 16), 128, 0, false); }
void BM_TrainStepViTB32Batch32(benchmark::State& s) { run(s, vit_b32(), 32, 0, false); }
void BM_TrainStepViTB32Batch32Micro8Recompute(benchmark::State& s) { run(s, vit_b32(), 32, 8, true); }

}  // namespace

// CLIP_TRAIN_STEPS=n: see train_bench_main.h.
int main(int argc, char** argv) {
  return clip::bench::run_train_benchmarks(argc, argv, {
      {"BM_TrainStepTiny", BM_TrainStepTiny, benchmark::kMillisecond, 0},
      {"BM_TrainStepTinyBatch64", BM_TrainStepTinyBatch64, benchmark::kMillisecond, 0},
      {"BM_TrainStepTinyMicro2Recompute", BM_TrainStepTinyMicro2Recompute, benchmark::kMillisecond, 0},
      {"BM_TrainStepCifarW256L6Batch256", BM_TrainStepCifarW256L6Batch256, benchmark::kMillisecond, 0},
      {"BM_TrainStepCifarW192L6Batch256", BM_TrainStepCifarW192L6Batch256, benchmark::kMillisecond, 0},
      {"BM_TrainStepCifarW128L4Batch128", BM_TrainStepCifarW128L4Batch128, benchmark::kMillisecond, 0},
      {"BM_TrainStepViTB32Batch32", BM_TrainStepViTB32Batch32, benchmark::kSecond, 3},
      {"BM_TrainStepViTB32Batch32Micro8Recompute", BM_TrainStepViTB32Batch32Micro8Recompute, benchmark::kSecond, 2},
  });
}
