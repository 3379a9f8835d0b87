// ViT-B/32 encoder throughput (tools/bench_encoders.sh runs this beside tools/bench_torch.py on
// the same weights and inputs and prints the ratios; docs/benchmarks/model.md has results).
//
// The model directory (CLIP_BENCH_MODEL, default /tmp/clip_bench_vitb32) is written by
//   /usr/bin/python3 tools/reference_model.py write --config ViT-B-32 --schemes openai
//       --goldens --image-batch 32 --text-lengths <32 typical prompt lengths> --out DIR
// and is generated here when missing. Inputs are its golden/pixels.npy (32 images) and
// golden/text_ids.npy (32 prompts of <= 20 tokens); before timing, the features are checked
// against the reference's so a fast wrong encoder cannot report a number.
//
//   bench_model_encoders [google-benchmark flags]
//   bench_model_encoders --rss-probe [images [fp32|bf16|int8|int4]]   load, encode, print peak RSS vs file size
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/io.h"
#include "backend/matmul.h"
#include "core/threads.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "test_support.h"

namespace {

const char* kDefaultLengths =
    "12,9,14,7,20,11,10,16,8,13,15,9,12,18,7,11,10,14,19,8,12,9,16,13,10,11,17,8,15,12,9,20";

std::string model_dir() {
  const char* env = std::getenv("CLIP_BENCH_MODEL");
  return env ? env : "/tmp/clip_bench_vitb32";
}

void ensure_model(const std::string& dir) {
  if (std::filesystem::exists(dir + "/golden/text_features.npy")) return;
  const char* py = std::getenv("CLIP_PYTHON");
  const std::string cmd = std::string(py ? py : "/usr/bin/python3") + " " CLIP_SOURCE_DIR
                          "/tools/reference_model.py write --config ViT-B-32 --schemes openai "
                          "--goldens --image-batch 32 --text-lengths " +
                          kDefaultLengths + " --out " + dir;
  std::fprintf(stderr, "generating the benchmark checkpoint: %s\n", cmd.c_str());
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "failed to generate %s\n", dir.c_str());
    std::exit(2);
  }
}

struct Fixture {
  std::unique_ptr<clip::ClipModel> model;
  std::vector<float> pixels;
  std::vector<int32_t> ids;
  int images = 0, texts = 0, context = 0;
  std::vector<float> want_image, want_text;
  std::unique_ptr<clip::ClipModel> bf16;  // the same weights prepared for bf16 products, where available
  std::unique_ptr<clip::ClipModel> int8;  // ... for int8 products, where available
  double int8_load_seconds = 0;           // loading + quantizing the int8 model
  std::unique_ptr<clip::ClipModel> int4;  // ... for int4 (q4_0 blocks; every CPU)
  double int4_load_seconds = 0;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture f;
    const std::string dir = model_dir();
    ensure_model(dir);
    f.model = std::make_unique<clip::ClipModel>(clip::load_checkpoint(dir + "/openai/model.safetensors"));
    if (clip::bf16_available())
      f.bf16 = std::make_unique<clip::ClipModel>(clip::load_checkpoint(dir + "/openai/model.safetensors"),
                                                 clip::Precision::BF16);
    if (clip::int8_available()) {
      const auto t0 = std::chrono::steady_clock::now();
      f.int8 = std::make_unique<clip::ClipModel>(clip::load_checkpoint(dir + "/openai/model.safetensors"),
                                                 clip::Precision::INT8);
      f.int8_load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    {
      const auto t0 = std::chrono::steady_clock::now();
      f.int4 = std::make_unique<clip::ClipModel>(clip::load_checkpoint(dir + "/openai/model.safetensors"),
                                                 clip::Precision::INT4);
      f.int4_load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    std::vector<int64_t> shape;
    f.pixels = clip::read_npy_f32(dir + "/golden/pixels.npy", shape);
    f.images = int(shape[0]);
    std::vector<float> ids = clip::read_npy_f32(dir + "/golden/text_ids.npy", shape);
    f.texts = int(shape[0]);
    f.context = int(shape[1]);
    for (float v : ids) f.ids.push_back(int32_t(v));
    f.want_image = clip::read_npy_f32(dir + "/golden/image_features.npy", shape);
    f.want_text = clip::read_npy_f32(dir + "/golden/text_features.npy", shape);
    return f;
  }();
  return f;
}

// Runs with the fp32 model (args {batch, 0}), the bf16 one ({batch, 1}), the int8 one
// ({batch, 2}) or the int4 one ({batch, 3}): fp32 must match the reference within 2e-5, bf16
// within cosine 0.9995, int8 within 0.999 and int4 within 0.99 (issue 17's bounds).
clip::ClipModel* model_for(benchmark::State& state, Fixture& f) {
  if (state.range(1) == 0) return f.model.get();
  if (state.range(1) == 3) {
    state.counters["load+quantize s"] = f.int4_load_seconds;
    return f.int4.get();
  }
  if (state.range(1) == 2) {
    if (!f.int8) state.SkipWithError("no int8 products on this CPU (AVX512-VNNI or AMX needed)");
    state.counters["load+quantize s"] = f.int8_load_seconds;
    return f.int8.get();
  }
  if (!f.bf16) state.SkipWithError("no bf16 products on this CPU (AVX512-BF16 or AMX needed)");
  return f.bf16.get();
}
double cosine_bound(const benchmark::State& state) {
  return state.range(1) == 3 ? 0.99 : state.range(1) == 2 ? 0.999 : 0.9995;
}

double max_abs_diff(const std::vector<float>& a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

// Multiply-adds x2 of one ViT image (products and attention), for GFLOP/s. `executed`: what
// the encoder computes, whose last block runs q, attention, out_proj and the MLP for the class
// token only (keys and values for every token); otherwise the full model's count, as a
// reference implementation computes it (the "effective" rate).
double vit_flops_per_image(const clip::ModelConfig& c, bool executed) {
  const double w = c.vision.width, m = c.vision.mlp_dim, g = c.vision.image_size / c.vision.patch_size;
  const double T = g * g + 1, P = 3.0 * c.vision.patch_size * c.vision.patch_size;
  const double per_layer = 2 * T * w * (3 * w + w + 2 * m) + 2 * 2 * T * T * w;
  const double pooled_layer = 2 * T * w * 2 * w + 2 * w * (w + w + 2 * m) + 2 * 2 * T * w;
  const double layers = c.vision.layers > 0 && executed
                            ? (c.vision.layers - 1) * per_layer + pooled_layer
                            : c.vision.layers * per_layer;
  return 2 * g * g * P * w + layers + 2 * w * c.embed_dim;
}

void BM_EncodeImages(benchmark::State& state) {
  Fixture& f = fixture();
  clip::ClipModel* model = model_for(state, f);
  if (!model) return;
  const int batch = int(state.range(0));
  const int E = model->embed_dim();
  std::vector<float> out(size_t(batch) * E);
  model->encode_images(f.pixels.data(), batch, out.data());
  const double err = max_abs_diff(out, f.want_image.data(), out.size());
  const double cosine = clip::test::min_row_cosine(out.data(), f.want_image.data(), out.size(), size_t(E));
  state.counters["min cosine"] = cosine;
  if (state.range(1) == 0 ? err > 2e-5 : cosine < cosine_bound(state)) {
    state.SkipWithError(("image features differ from the reference by " + std::to_string(err)).c_str());
    return;
  }
  for (auto _ : state) {
    model->encode_images(f.pixels.data(), batch, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  const double flops = vit_flops_per_image(f.model->config(), true) * batch;
  const double nominal = vit_flops_per_image(f.model->config(), false) * batch;
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["effective GFLOP/s"] =
      benchmark::Counter(nominal / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_EncodeImages)->Args({1, 0})->Args({32, 0})->Args({1, 1})->Args({32, 1})->Args({1, 2})->Args({32, 2})->Args({1, 3})->Args({32, 3})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_EncodeTexts(benchmark::State& state) {
  Fixture& f = fixture();
  clip::ClipModel* model = model_for(state, f);
  if (!model) return;
  const int batch = int(state.range(0));
  const int E = model->embed_dim();
  std::vector<float> out(size_t(batch) * E);
  model->encode_texts(f.ids.data(), batch, f.context, out.data());
  const double err = max_abs_diff(out, f.want_text.data(), out.size());
  const double cosine = clip::test::min_row_cosine(out.data(), f.want_text.data(), out.size(), size_t(E));
  state.counters["min cosine"] = cosine;
  if (state.range(1) == 0 ? err > 2e-5 : cosine < cosine_bound(state)) {
    state.SkipWithError(("text features differ from the reference by " + std::to_string(err)).c_str());
    return;
  }
  int longest = 0;
  for (int b = 0; b < batch; ++b) {
    int n = 0;
    while (n < f.context && f.ids[size_t(b) * f.context + n] != 0) ++n;
    longest = std::max(longest, n);
  }
  for (auto _ : state) {
    model->encode_texts(f.ids.data(), batch, f.context, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["tokens"] = longest;
}
BENCHMARK(BM_EncodeTexts)->Args({1, 0})->Args({32, 0})->Args({1, 1})->Args({32, 1})->Args({1, 2})->Args({32, 2})->Args({1, 3})->Args({32, 3})->Unit(benchmark::kMillisecond)->UseRealTime();

// Peak RSS of loading the checkpoint and encoding `images` images and one text, against the
// size of the .safetensors file (the f32 weights are mmap'd views, not copies).
int rss_probe(int images, const std::string& precision) {
  const std::string dir = model_dir();
  ensure_model(dir);
  const std::string path = dir + "/openai/model.safetensors";
  const double file_mb = double(std::filesystem::file_size(path)) / (1 << 20);
  clip::ClipModel model(clip::load_checkpoint(path), clip::parse_precision(precision));
  std::vector<int64_t> shape;
  std::vector<float> pixels = clip::read_npy_f32(dir + "/golden/pixels.npy", shape);
  images = std::min<int>(images, int(shape[0]));
  std::vector<float> ids_f = clip::read_npy_f32(dir + "/golden/text_ids.npy", shape);
  std::vector<int32_t> ids(ids_f.begin(), ids_f.begin() + shape[1]);
  std::vector<float> out(size_t(std::max(images, 1)) * model.embed_dim());
  model.encode_images(pixels.data(), images, out.data());
  model.encode_texts(ids.data(), 1, int(shape[1]), out.data());
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double rss_mb = double(ru.ru_maxrss) / 1024;
  std::printf("checkpoint %.1f MiB, peak RSS %.1f MiB (%.3fx) after encoding %d image(s) + 1 text at %s\n",
              file_mb, rss_mb, rss_mb / file_mb, images, precision.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--rss-probe") == 0)
    return rss_probe(argc >= 3 ? std::atoi(argv[2]) : 1, argc >= 4 ? argv[3] : "fp32");
  clip::set_num_threads(0);
  benchmark::AddCustomContext("matmul_backend", clip::matmul_backend_name());
  benchmark::AddCustomContext("threads", std::to_string(clip::num_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
