#pragma once
// One thread pool for the whole compute core: OpenMP's. The matmul backends are configured so
// that they either run on that same pool (oneDNN, built against libgomp) or never start threads
// of their own (OpenBLAS is pinned to one thread; we split large products across OpenMP
// threads ourselves). Two pools on a 2-core machine spin against each other and make every
// kernel several times slower, so nothing else in clip may start compute threads.
namespace clip {

// Sets the number of compute threads (OpenMP and the BLAS). n <= 0 means "all cores"
// (std::thread::hardware_concurrency, or OMP_NUM_THREADS when set).
void set_num_threads(int n);
// The number of threads parallel kernels use.
int num_threads();

}  // namespace clip
