#include "core/threads.h"

#include <omp.h>

#include <cstdlib>
#include <thread>

#include "backend/matmul.h"

namespace clip {

namespace {
int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? int(hc) : 1;
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
  omp_set_num_threads(n);
  matmul_backend_set_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace clip
