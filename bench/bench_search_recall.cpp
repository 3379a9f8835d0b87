// The approximate (HNSW) index against the exact one on real embeddings (docs/BENCHMARKS.md):
// recall@10 and the latency of one query in the vector index, at 100k and 1M vectors.
//
// Vectors: the shipped model's image embeddings of every real image in ../shared/data (CIFAR-10
// train and test, MNIST, Fashion-MNIST test and, when `dataset-fashion-mnist` is installed, its
// training set), a seeded sample of 100,000 of them; for 1M, those plus
// 900,000 jittered copies (a real vector plus Gaussian noise, normalized: each keeps a cosine of
// about 0.9 to its source), which keeps the neighbourhood structure of real data at a size the
// shared data does not reach. Queries: the text embeddings of "a photo of a {c}." for CLIP's
// 1,000 ImageNet class names, real text queries as `clip search` sees them.
// Truth: the exact index's top 10 for the same query. Image features are cached under
// build/bench_search/ (clip eval's feature cache); HNSW build time is reported per size.
//
//   build/bench/bench_search_recall --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <clip/clip.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <unordered_set>

#include "core/io.h"
#include "core/ops.h"
#include "eval/features.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "search/vector_index.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;
using clip::search::IndexType;
using clip::search::VectorIndex;

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kShared = CLIP_SHARED_DATA;

struct Corpus {
  int dim = 0;
  std::vector<float> real;     // [n_real, dim]
  std::vector<float> queries;  // [1000, dim]
};

const Corpus& corpus() {
  static const Corpus c = [] {
    Corpus c;
    clip::ClipModel model(clip::load_checkpoint(kModel));
    c.dim = model.embed_dim();
    clip::PreprocessConfig pre = clip::load_preprocess_config(kModel);
    pre.image_size = model.image_size();
    clip::eval::FeatureOptions fo;
    fo.batch_size = 256;
    fo.cache_dir = std::string(CLIP_SOURCE_DIR) + "/build/bench_search/features";
    fo.model_key = clip::eval::file_identity(kModel + "/open_clip_model.safetensors");
    std::vector<std::string> sets = {kShared + "/cifar10_jpeg/train.tar.gz", kShared + "/cifar10_jpeg/test",
                                     kShared + "/mnist/t10k-images-idx3-ubyte.gz",
                                     kShared + "/mnist/train10k-images-idx3-ubyte.gz",
                                     kShared + "/fashion_mnist/t10k-images-idx3-ubyte.gz",
                                     "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"};
    for (const std::string& s : sets) {
      if (!fs::exists(s)) {
        std::fprintf(stderr, "bench_search_recall: %s not found, left out\n", s.c_str());
        continue;
      }
      clip::data::Dataset d = clip::data::open_dataset(s);
      const auto f = clip::eval::image_features(d, pre, c.dim, [&](const float* px, int b, float* out) {
        model.encode_images(px, b, out);
      }, fo);
      c.real.insert(c.real.end(), f.begin(), f.end());
      std::fprintf(stderr, "bench_search_recall: %s: %zu images\n", s.c_str(), d.size());
    }
    const clip::Model api = clip::Model::load(kModel);
    std::vector<std::string> texts;
    const std::string names = clip::read_text_file(kShared + "/clip_prompts/imagenet_classes.txt");
    for (size_t pos = 0; pos < names.size();) {
      size_t nl = names.find('\n', pos);
      if (nl == std::string::npos) nl = names.size();
      if (nl > pos) texts.push_back("a photo of a " + names.substr(pos, nl - pos) + ".");
      pos = nl + 1;
    }
    c.queries = api.encode_texts(texts, 64, /*truncate=*/true).data;
    return c;
  }();
  return c;
}

// n vectors: a seeded sample of the real ones, then jittered copies of them.
std::vector<float> vectors(int64_t n) {
  const Corpus& c = corpus();
  const int64_t real = int64_t(c.real.size()) / c.dim;
  std::mt19937_64 rng(12345);
  std::vector<int64_t> order(size_t(real), 0);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const int64_t base = std::min<int64_t>(real, 100000);
  std::vector<float> v(size_t(n) * c.dim);
  // Noise of standard deviation s per coordinate on a unit vector: cosine ~ 1 / sqrt(1 + s^2 dim).
  const float sigma = float(std::sqrt((1 / (0.9 * 0.9) - 1) / c.dim));
  std::normal_distribution<float> g(0, sigma);
  for (int64_t i = 0; i < n; ++i) {
    const float* src = c.real.data() + size_t(order[size_t(i % base)]) * c.dim;
    float* dst = v.data() + size_t(i) * c.dim;
    for (int j = 0; j < c.dim; ++j) dst[j] = src[j] + (i < base ? 0.f : g(rng));
    clip::l2_normalize_rows(dst, 1, c.dim);
  }
  return v;
}

struct Pair {
  std::unique_ptr<VectorIndex> exact, hnsw;
  double build_s = 0;
};

const Pair& indexes(int64_t n) {
  static std::map<int64_t, Pair> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  const auto v = vectors(n);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 1);
  Pair p;
  const int dim = corpus().dim;
  p.exact = std::make_unique<VectorIndex>(VectorIndex::build(IndexType::Exact, dim, ids, v));
  const auto t0 = std::chrono::steady_clock::now();
  p.hnsw = std::make_unique<VectorIndex>(VectorIndex::build(IndexType::Hnsw, dim, ids, v));
  p.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "bench_search_recall: HNSW (M 32) over %lld x %d built in %.1f s\n", static_cast<long long>(n), dim,
               p.build_s);
  return cache.emplace(n, std::move(p)).first->second;
}

// args: vectors, index type (0 exact, 1 HNSW), HNSW efSearch
void BM_Query(benchmark::State& state) {
  const int64_t n = state.range(0);
  const bool approximate = state.range(1) == 1;
  const Pair& p = indexes(n);
  const Corpus& c = corpus();
  const int nq = int(c.queries.size()) / c.dim, k = 10;
  VectorIndex& ix = approximate ? *p.hnsw : *p.exact;
  if (approximate) ix.set_ef_search(int(state.range(2)));
  // Recall over all queries, against the exact index.
  int64_t found = 0;
  for (int q = 0; q < nq; ++q) {
    std::unordered_set<int64_t> truth;
    for (const auto& nb : p.exact->search(c.queries.data() + size_t(q) * c.dim, k)) truth.insert(nb.id);
    for (const auto& nb : ix.search(c.queries.data() + size_t(q) * c.dim, k)) found += truth.count(nb.id);
  }
  int q = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ix.search(c.queries.data() + size_t(q) * c.dim, k));
    q = (q + 1) % nq;
  }
  state.counters["recall@10"] = double(found) / double(nq * k);
  state.counters["dim"] = c.dim;
  if (approximate) state.counters["build_s"] = p.build_s;
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {100000, 1000000}) {
    b->Args({n, 0, 0});
    for (int ef : {32, 64, 128, 256}) b->Args({n, 1, ef});
  }
}
BENCHMARK(BM_Query)->Apply(sizes)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
