// The C++ API's image encoding on files (Model::encode_image_files), the peer of the Python
// module's encode_image in bench/python_vs_cpp.sh. CLIP_BENCH_MODEL (default: the random
// ViT-B/32 of bench_model_encoders), 512 CIFAR-10 ship JPEGs, batch 64.
#include <benchmark/benchmark.h>

#include <clip/clip.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

void BM_EncodeImageFiles(benchmark::State& state) {
  const char* env = std::getenv("CLIP_BENCH_MODEL");
  const std::string model = env ? env : "/tmp/clip_bench_vitb32/openai/model.safetensors";
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test/ship"))
    paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  paths.resize(std::min<size_t>(paths.size(), 512));
  const clip::Model m = clip::Model::load(model);
  m.encode_image_files(paths, 64);  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(m.encode_image_files(paths, 64));
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(paths.size()));
}
BENCHMARK(BM_EncodeImageFiles)->Unit(benchmark::kMillisecond)->MinTime(5);

}  // namespace

BENCHMARK_MAIN();
