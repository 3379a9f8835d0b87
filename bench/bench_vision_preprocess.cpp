// Decode + preprocess to a 224x224 normalised tensor, images per second, on one and two
// threads: the sample photos (PNG and JPEG, 300..741 px) and the 10,000 CIFAR-10 test JPEGs.
// Compare with Pillow doing the same work: /usr/bin/python3 tools/image_reference.py bench.
// Optional: CLIP_BENCH_LARGE_DIR=<folder of large JPEGs> adds the exact and the fast (scaled
// JPEG decoding) paths on them. Files are read from disk (page cache) in the timed loop, as
// Pillow's Image.open does. See docs/benchmarks/images.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/io.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::string> list_files(const fs::path& dir, std::initializer_list<const char*> exts) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (std::find_if(exts.begin(), exts.end(), [&](const char* x) { return ext == x; }) != exts.end())
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void run_set(benchmark::State& state, const std::vector<std::string>* files, int reps, int draft) {
  clip::PreprocessConfig cfg;
  clip::DecodeOptions opt;
  opt.jpeg_draft_min_side = draft;
  std::vector<float> out(size_t(3) * cfg.image_size * cfg.image_size);
  const size_t T = size_t(state.threads()), me = size_t(state.thread_index());
  if (draft > 0 && me == 0) {
    // Effect of the fast path on the preprocessed tensor, against the exact path (untimed).
    double se = 0, worst = 0;
    size_t count = 0;
    std::vector<float> exact(out.size());
    for (const auto& f : *files) {
      clip::preprocess_image(clip::decode_image_file(f), cfg, exact.data());
      clip::preprocess_image(clip::decode_image_file(f, opt), cfg, out.data());
      for (size_t i = 0; i < out.size(); ++i) {
        // Back to 0..255 units: tensor difference * std * 255.
        const double d = double(out[i] - exact[i]) * cfg.std[i / (out.size() / 3)] * 255.0;
        se += d * d;
        worst = std::max(worst, std::fabs(d));
      }
      count += out.size();
    }
    const double mse = se / double(count);
    state.counters["psnr_db"] = mse > 0 ? 10.0 * std::log10(255.0 * 255.0 / mse) : 999.0;
    state.counters["max_diff_8bit"] = worst;
  }
  int64_t done = 0;
  for (auto _ : state) {
    for (int r = 0; r < reps; ++r)
      for (size_t i = me; i < files->size(); i += T) {
        const clip::Image img = clip::decode_image_file((*files)[i], opt);
        clip::preprocess_image(img, cfg, out.data());
        benchmark::DoNotOptimize(out.data());
        ++done;
      }
  }
  state.SetItemsProcessed(done);
}

}  // namespace

int main(int argc, char** argv) {
  static const fs::path shared = std::getenv("CLIP_SHARED_DATA") ? std::getenv("CLIP_SHARED_DATA") : CLIP_SHARED_DATA;
  static std::vector<std::string> photos = list_files(shared / "sample_photos", {".png", ".jpg"});
  static std::vector<std::string> cifar = list_files(shared / "cifar10_jpeg" / "test", {".jpg"});
  static std::vector<std::string> large;
  if (const char* d = std::getenv("CLIP_BENCH_LARGE_DIR")) large = list_files(d, {".jpg", ".jpeg"});
  for (int threads : {1, 2}) {
    if (!photos.empty())
      benchmark::RegisterBenchmark("sample_photos/exact", run_set, &photos, 20, 0)
          ->Threads(threads)->UseRealTime()->Iterations(3)->Unit(benchmark::kMillisecond);
    if (!cifar.empty())
      benchmark::RegisterBenchmark("cifar10_test_jpeg/exact", run_set, &cifar, 1, 0)
          ->Threads(threads)->UseRealTime()->Iterations(2)->Unit(benchmark::kMillisecond);
    if (!large.empty()) {
      benchmark::RegisterBenchmark("large_jpeg/exact", run_set, &large, 1, 0)
          ->Threads(threads)->UseRealTime()->Iterations(2)->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("large_jpeg/fast_draft224", run_set, &large, 1, 224)
          ->Threads(threads)->UseRealTime()->Iterations(2)->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
