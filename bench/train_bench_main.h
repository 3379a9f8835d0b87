#pragma once
// The main() of the training benchmarks (bench_train_step, bench_train_resnet): registers
// their cases with a time unit and a default iteration count, and honours CLIP_TRAIN_STEPS=n
// (every case runs exactly n timed steps, no iteration-count search; the PyTorch comparison
// scripts tools/bench_torch_train*.py use it).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <initializer_list>

namespace clip::bench {

struct TrainBenchCase {
  const char* name;
  void (*fn)(benchmark::State&);
  benchmark::TimeUnit unit;
  int default_iterations;  // 0: google benchmark's search
};

inline int run_train_benchmarks(int argc, char** argv, std::initializer_list<TrainBenchCase> cases) {
  const char* env = std::getenv("CLIP_TRAIN_STEPS");
  const int steps = env ? std::atoi(env) : 0;
  for (const TrainBenchCase& c : cases) {
    auto* b = benchmark::RegisterBenchmark(c.name, c.fn)->Unit(c.unit)->UseRealTime();
    if (steps > 0) b->Iterations(steps);
    else if (c.default_iterations > 0) b->Iterations(c.default_iterations);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace clip::bench
