// Matrix-product backends at the encoders' shapes, for the choice recorded in docs/DESIGN.md:
// OpenBLAS (cblas_sgemm, with its own threads, and pinned to 1 thread with the columns split
// over OpenMP as clip's OpenBLAS path does) against oneDNN (dnnl_sgemm on the OpenMP pool),
// plus clip::sgemm (whatever the build chose). Products are x[M,K] @ W[N,K]^T (a Linear layer).
//   M = 50: ViT-B/32 at batch 1 (49 patches + class token); 1600: batch 32; 640: 32 texts x 20.
//   2048^3: the machine's large-product peak.
// BM_ClipPackedLinear is the encoders' path (weights packed at load).
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <random>
#include <vector>

#include "backend/matmul.h"
#include "core/threads.h"
#if defined(CLIP_HAVE_ONEDNN)
#include <dnnl.h>
#endif

extern "C" void openblas_set_num_threads(int);

namespace {

struct Operands {
  std::vector<float> x, w, y;
  Operands(int64_t M, int64_t N, int64_t K) : x(size_t(M * K)), w(size_t(N * K)), y(size_t(M * N)) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> d(-1, 1);
    for (auto& v : x) v = d(rng);
    for (auto& v : w) v = d(rng);
  }
};

template <class F>
void run(benchmark::State& state, F&& product) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Operands o(M, N, K);
  product(o, M, N, K);
  for (auto _ : state) {
    product(o, M, N, K);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_OpenBLAS_OwnThreads(benchmark::State& state) {
  openblas_set_num_threads(clip::num_threads());
  run(state, [](Operands& o, int64_t M, int64_t N, int64_t K) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.f, o.x.data(), int(K),
                o.w.data(), int(K), 0.f, o.y.data(), int(N));
  });
  openblas_set_num_threads(1);
}

void BM_OpenBLAS_1Thread_SplitByOpenMP(benchmark::State& state) {
  openblas_set_num_threads(1);
  run(state, [](Operands& o, int64_t M, int64_t N, int64_t K) {
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t n0 = (N * t / nt) / 16 * 16, n1 = t + 1 == nt ? N : (N * (t + 1) / nt) / 16 * 16;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(n1 - n0), int(K), 1.f, o.x.data(),
                  int(K), o.w.data() + n0 * K, int(K), 0.f, o.y.data() + n0, int(N));
    }
  });
}

#if defined(CLIP_HAVE_ONEDNN)
void BM_OneDNN(benchmark::State& state) {
  run(state, [](Operands& o, int64_t M, int64_t N, int64_t K) {
    dnnl_sgemm('N', 'T', M, N, K, 1.f, o.x.data(), K, o.w.data(), K, 0.f, o.y.data(), N);
  });
}
#endif

void BM_ClipSgemm(benchmark::State& state) {
  state.SetLabel(clip::matmul_backend_name());
  run(state, [](Operands& o, int64_t M, int64_t N, int64_t K) {
    clip::sgemm(false, true, M, N, K, 1.f, o.x.data(), K, o.w.data(), K, 0.f, o.y.data(), N);
  });
}

// clip's inference path for Linear layers: the weight packed once (oneDNN's packed sgemm
// where available, see clip::PackedWeight), then y = x W^T per call.
void BM_ClipPackedLinear(benchmark::State& state) {
  const int64_t N = state.range(1), K = state.range(2);
  Operands weights(1, N, K);
  const clip::PackedWeight packed(weights.w.data(), N, K);
  state.SetLabel(packed.has_packed_copy() ? "packed" : "not packed");
  run(state, [&](Operands& o, int64_t M, int64_t, int64_t) {
    clip::linear_forward(o.y.data(), o.x.data(), packed, nullptr, M);
  });
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int64_t M : {50, 1600})
    for (auto [N, K] : {std::pair<int64_t, int64_t>{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}})
      b->Args({M, N, K});
  b->Args({640, 1536, 512})->Args({640, 2048, 512})->Args({12, 2048, 512})->Args({2048, 2048, 2048});
  b->UseRealTime();
}

BENCHMARK(BM_OpenBLAS_OwnThreads)->Apply(shapes);
BENCHMARK(BM_OpenBLAS_1Thread_SplitByOpenMP)->Apply(shapes);
#if defined(CLIP_HAVE_ONEDNN)
BENCHMARK(BM_OneDNN)->Apply(shapes);
#endif
BENCHMARK(BM_ClipSgemm)->Apply(shapes);
BENCHMARK(BM_ClipPackedLinear)->Apply(shapes);

}  // namespace

int main(int argc, char** argv) {
  clip::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
