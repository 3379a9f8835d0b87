// One CLIP training step (forward + contrastive loss + backward + clipping + AdamW) on the
// CPU: the tiny configuration of the reference test, and a ViT-B/32-sized model at batch 32
// (randomly initialised; ~4.5 GB for parameters, gradients, Adam moments and activations).
// Reports samples/s. Run on a quiet machine:
//   ninja -C build bench_train_step && ./build/bench/bench_train_step
//   ./build/bench/bench_train_step --benchmark_filter=Tiny      (seconds)
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "train/trainer.h"

using namespace clip;
using namespace clip::train;

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
  TrainableClip<float> model(c);
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
  for (auto _ : state) {
    const StepStats s = trainer.step(pixels.data(), ids.data(), N);
    benchmark::DoNotOptimize(s.loss);
  }
  state.counters["samples/s"] =
      benchmark::Counter(double(N) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["activation_MB"] = double(model.activation_bytes()) / 1e6;
}

void BM_TrainStepTiny(benchmark::State& s) { run(s, tiny(), 6, 0, false); }
void BM_TrainStepTinyMicro2Recompute(benchmark::State& s) { run(s, tiny(), 6, 2, true); }
void BM_TrainStepCifarW256L6Batch256(benchmark::State& s) { run(s, cifar(256, 6), 256, 0, false); }
void BM_TrainStepCifarW192L6Batch256(benchmark::State& s) { run(s, cifar(192, 6), 256, 0, false); }
void BM_TrainStepCifarW128L4Batch128(benchmark::State& s) { run(s, cifar(128, 4, 128, 3, 16), 128, 0, false); }
void BM_TrainStepViTB32Batch32(benchmark::State& s) { run(s, vit_b32(), 32, 0, false); }
void BM_TrainStepViTB32Batch32Micro8Recompute(benchmark::State& s) { run(s, vit_b32(), 32, 8, true); }

}  // namespace

BENCHMARK(BM_TrainStepTiny)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepTinyMicro2Recompute)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepCifarW256L6Batch256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepCifarW192L6Batch256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepCifarW128L4Batch128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepViTB32Batch32)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);
BENCHMARK(BM_TrainStepViTB32Batch32Micro8Recompute)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);
BENCHMARK_MAIN();
