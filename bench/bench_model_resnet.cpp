// ModifiedResNet image encoding (docs/benchmarks/resnet.md): RN50 at batch 1 and 32 and each
// precision (fp32, and bf16 / int8 / int4 where the CPU has them), with the
// per-stage split as counters (ms_stem, ms_layer1..4, ms_attnpool: mean per iteration), and
// single convolutions at RN50's shapes on each backend (BM_Conv).
//
// Weights: $CLIP_RESNET_WEIGHTS, a safetensors file with OpenAI names, e.g. from
//   /usr/bin/python3 tools/reference_resnet.py --preset rn50 --no-golden --text-width 64 --out build/resnet-bench
// (the default path is build/resnet-bench/rn50.safetensors under the source tree).
// Side by side with PyTorch: tools/bench_torch_resnet.py --cpp-bench <this binary>.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/conv.h"
#include "model/resnet.h"
#include "model/weights.h"

namespace {

std::string weights_path() {
  if (const char* p = std::getenv("CLIP_RESNET_WEIGHTS")) return p;
  return std::string(CLIP_SOURCE_DIR) + "/build/resnet-bench/rn50.safetensors";
}

// The encoder at precision index p (0 fp32, 1 bf16, 2 int8, 3 int4), loaded once.
const clip::Precision kPrecisions[] = {clip::Precision::F32, clip::Precision::BF16, clip::Precision::INT8,
                                       clip::Precision::INT4};
const clip::ResNetVisual* encoder(int p, std::string& error) {
  static std::unique_ptr<clip::ResNetVisual> enc[4];
  static std::string load_error[4];
  static bool tried[4] = {false, false, false, false};
  if (!tried[p]) {
    tried[p] = true;
    const std::string path = weights_path();
    if (!std::filesystem::exists(path)) {
      load_error[p] = path + " not found: set CLIP_RESNET_WEIGHTS or run /usr/bin/python3 tools/reference_resnet.py "
                             "--preset rn50 --no-golden --text-width 64 --out build/resnet-bench";
    } else {
      try {
        enc[p] = std::make_unique<clip::ResNetVisual>(clip::load_checkpoint(path), kPrecisions[p]);
      } catch (const std::exception& e) {
        load_error[p] = e.what();
      }
    }
  }
  error = load_error[p];
  return enc[p].get();
}

// Args {batch, precision index}; the features' min cosine to fp32's on the same pixels is a
// counter (issue 17's bounds: 0.9995 bf16, 0.999 int8, 0.99 int4).
void BM_ResNetEncode(benchmark::State& state) {
  std::string error;
  const int p = int(state.range(1));
  const clip::ResNetVisual* enc = encoder(p, error);
  const clip::ResNetVisual* reference = encoder(0, error);
  if (!enc || !reference) {
    state.SkipWithError(error.c_str());
    return;
  }
  const int batch = int(state.range(0));
  const int S = enc->image_size(), E = enc->embed_dim();
  std::vector<float> pixels(size_t(batch) * 3 * S * S), out(size_t(batch) * E), want(out.size());
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  for (float& v : pixels) v = dist(rng);
  reference->encode(pixels.data(), batch, want.data());
  enc->encode(pixels.data(), batch, out.data());  // warm-up: first-touch of the buffers
  double min_cosine = 1;
  for (int b = 0; b < batch; ++b) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < E; ++i) {
      const double x = out[size_t(b) * E + i], y = want[size_t(b) * E + i];
      ab += x * y, aa += x * x, bb += y * y;
    }
    min_cosine = std::min(min_cosine, ab / std::sqrt(aa * bb));
  }
  state.counters["min cosine"] = min_cosine;
  double stage[6] = {0, 0, 0, 0, 0, 0};
  for (auto _ : state) {
    enc->encode(pixels.data(), batch, out.data());
    benchmark::DoNotOptimize(out.data());
    const auto& t = enc->last_stage_times();
    stage[0] += t.stem, stage[5] += t.attnpool;
    for (int l = 0; l < 4; ++l) stage[1 + l] += t.layer[l];
  }
  const double n = double(state.iterations());
  static const char* const names[6] = {"ms_stem", "ms_layer1", "ms_layer2", "ms_layer3", "ms_layer4", "ms_attnpool"};
  for (int i = 0; i < 6; ++i) state.counters[names[i]] = stage[i] / n * 1e3;
  state.counters["img_per_s"] = benchmark::Counter(double(batch) * n, benchmark::Counter::kIsRate);
}
void encode_args(benchmark::internal::Benchmark* b) {
  for (int64_t batch : {1, 32}) {
    b->Args({batch, 0});
    if (clip::bf16_available()) b->Args({batch, 1});
    if (clip::int8_available()) b->Args({batch, 2});
    b->Args({batch, 3});
  }
}
BENCHMARK(BM_ResNetEncode)->Apply(encode_args)->Unit(benchmark::kMillisecond)->UseRealTime();

// One convolution (BN folded, ReLU) at RN50's shapes, per backend, for the choice in
// ConvBackend::Auto: {backend (0 im2col+OpenBLAS, 1 oneDNN), in, out, spatial, kernel, stride, batch}.
void BM_Conv(benchmark::State& state) {
  const auto backend = state.range(0) == 0 ? clip::conv::ConvBackend::Im2colGemm : clip::conv::ConvBackend::OneDNN;
  if (backend == clip::conv::ConvBackend::OneDNN && !clip::conv::have_onednn()) {
    state.SkipWithError("built without oneDNN");
    return;
  }
  const int c = int(state.range(1)), o = int(state.range(2)), hw = int(state.range(3)), k = int(state.range(4)),
            stride = int(state.range(5)), batch = int(state.range(6));
  const int pad = k / 2, ho = clip::conv::conv_out_size(hw, k, stride, pad);
  std::vector<float> w(size_t(o) * c * k * k, 0.01f), in(size_t(batch) * hw * hw * c, 1.0f), out(size_t(batch) * ho * ho * o);
  const auto cw = clip::conv::make_conv_weights({c, o, k, stride, pad}, w.data());
  const auto saved = clip::conv::conv_backend();
  clip::conv::set_conv_backend(backend);
  clip::conv::conv2d_nhwc(cw, in.data(), batch, hw, hw, out.data(), true);  // warm-up (oneDNN primitive)
  for (auto _ : state) {
    clip::conv::conv2d_nhwc(cw, in.data(), batch, hw, hw, out.data(), true);
    benchmark::DoNotOptimize(out.data());
  }
  clip::conv::set_conv_backend(saved);
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * o * c * k * k * ho * ho * batch * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}
void conv_shapes(benchmark::internal::Benchmark* b) {
  const std::vector<std::vector<int64_t>> shapes = {
      {3, 32, 224, 3, 2, 1},   {32, 32, 112, 3, 1, 1},  {32, 64, 112, 3, 1, 1}, {64, 64, 56, 3, 1, 1},
      {64, 256, 56, 1, 1, 1},  {256, 64, 56, 1, 1, 1},  {128, 128, 28, 3, 1, 1}, {256, 256, 14, 3, 1, 1},
      {512, 512, 7, 3, 1, 1},  {1024, 256, 14, 1, 1, 1}, {512, 2048, 7, 1, 1, 1}, {64, 64, 56, 3, 1, 8},
      {256, 256, 14, 3, 1, 8}, {512, 512, 7, 3, 1, 8}};
  for (const auto& s : shapes)
    for (int64_t backend : {0, 1}) {
      std::vector<int64_t> args{backend};
      args.insert(args.end(), s.begin(), s.end());
      b->Args(args);
    }
  b->ArgNames({"onednn", "in", "out", "hw", "k", "s", "n"});
}
BENCHMARK(BM_Conv)->Apply(conv_shapes)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
