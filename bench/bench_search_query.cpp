// Query latency of `clip search` at 10k, 100k and 1M indexed vectors (docs/BENCHMARKS.md):
//   BM_TextQuery    text -> text tower -> normalized query -> vector index -> top 10 with paths
//   BM_IndexOnly    the same without the encoder (the vector index and the row lookups)
//   BM_OpenIndex    opening the database and its cached vector index (what `clip search` pays
//                   per process; model loading is reported apart, by BM_LoadModel)
// The databases hold random unit vectors of the model's dimension under fake paths (the query
// cost does not depend on what the vectors show); they are written once under
// build/bench_search/ and reused. Model: CLIP_BENCH_MODEL (default: a ViT-B/32 with random
// weights written by tools/reference_model.py, as for bench_model_encoders).
//
//   build/bench/bench_search_query --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include <clip/clip.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

#include "search/index_db.h"
#include "search/indexer.h"
#include "search/searcher.h"

namespace fs = std::filesystem;
using namespace clip::search;

namespace {

std::string model_path() {
  if (const char* m = std::getenv("CLIP_BENCH_MODEL")) return m;
  return "/tmp/clip_bench_vitb32/openai/model.safetensors";
}

const clip::Model& model() {
  static const clip::Model m = [] {
    if (!fs::exists(model_path())) {
      std::fprintf(stderr,
                   "no model at %s: write one with\n  /usr/bin/python3 tools/reference_model.py write --config ViT-B-32 "
                   "--schemes openai --out /tmp/clip_bench_vitb32\nor set CLIP_BENCH_MODEL\n",
                   model_path().c_str());
      std::exit(1);
    }
    return clip::Model::load(model_path());
  }();
  return m;
}

std::string db_path(int64_t n) {
  const fs::path dir = fs::path(CLIP_SOURCE_DIR) / "build" / "bench_search";
  fs::create_directories(dir);
  return (dir / ("random_" + std::to_string(n) + "_" + std::to_string(model().embed_dim()) + ".db")).string();
}

// A database of n random unit vectors bound to the model (written once).
std::string database(int64_t n) {
  const std::string path = db_path(n);
  IndexDb db = IndexDb::open(path, true);
  db.bind_model(model_identity(model(), model_path()));
  if (db.count() == n) return path;
  const int D = model().embed_dim();
  std::mt19937_64 rng(static_cast<uint64_t>(n));
  std::normal_distribution<float> g;
  db.begin();
  for (int64_t i = db.count(); i < n; ++i) {
    ImageRecord r;
    r.path = "/photos/" + std::to_string(i / 1000) + "/" + std::to_string(i) + ".jpg";
    r.hash = std::to_string(i);
    r.vector.resize(size_t(D));
    double s = 0;
    for (float& v : r.vector) s += double(v = g(rng)) * v;
    for (float& v : r.vector) v = float(v / std::sqrt(s));
    db.insert(r);
    if (i % 50000 == 49999) {
      db.bump_generation();
      db.commit();
      db.begin();
    }
  }
  db.bump_generation();
  db.commit();
  return path;
}

struct Opened {
  std::unique_ptr<IndexDb> db;
  std::unique_ptr<Searcher> searcher;
};

Opened& opened(int64_t n, IndexType type) {
  static std::map<std::pair<int64_t, int>, Opened> cache;
  Opened& o = cache[{n, int(type)}];
  if (!o.db) {
    o.db = std::make_unique<IndexDb>(IndexDb::open(database(n), false));
    o.searcher = std::make_unique<Searcher>(*o.db, type);  // builds and caches the vector index once
  }
  return o;
}

void BM_LoadModel(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(clip::Model::load(model_path()));
}
BENCHMARK(BM_LoadModel)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_TextQuery(benchmark::State& state) {
  Opened& o = opened(state.range(0), IndexType(state.range(1)));
  const std::vector<QueryTerm> terms = {parse_term("a photo of a dog on a beach", false, 1.f)};
  for (auto _ : state) {
    const std::vector<float> q = query_vector(model(), terms);
    benchmark::DoNotOptimize(o.searcher->search(q, 10));
  }
  state.SetLabel(std::string(index_type_name(IndexType(state.range(1)))) + ", encoder included");
}

void BM_IndexOnly(benchmark::State& state) {
  Opened& o = opened(state.range(0), IndexType(state.range(1)));
  const std::vector<float> q = query_vector(model(), {parse_term("a photo of a dog on a beach", false, 1.f)});
  for (auto _ : state) benchmark::DoNotOptimize(o.searcher->search(q, 10));
  state.SetLabel(index_type_name(IndexType(state.range(1))));
}

void BM_OpenIndex(benchmark::State& state) {
  (void)opened(state.range(0), IndexType(state.range(1)));  // the cached vector index exists
  const std::string path = database(state.range(0));
  for (auto _ : state) {
    IndexDb db = IndexDb::open(path, false);
    Searcher s(db, IndexType(state.range(1)));
    benchmark::DoNotOptimize(s.size());
  }
  state.SetLabel(index_type_name(IndexType(state.range(1))));
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {10000, 100000, 1000000}) b->Args({n, int64_t(IndexType::Exact)});
  // HNSW construction in this FAISS (1.7.3) takes ~72 s for 20k vectors of 512 dimensions
  // here: 10k only (docs/BENCHMARKS.md).
  b->Args({10000, int64_t(IndexType::Hnsw)});
}
BENCHMARK(BM_TextQuery)->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_IndexOnly)->Apply(sizes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_OpenIndex)->Apply(sizes)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
