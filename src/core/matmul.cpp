#include "core/matmul.h"

#include <omp.h>

#include <algorithm>
#include <string>

#include "core/error.h"

#if defined(CLIP_HAVE_ONEDNN)
#include <dnnl.h>
#else
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif

namespace clip {

#if defined(CLIP_HAVE_ONEDNN)
MatmulBackend matmul_backend() { return MatmulBackend::OneDNN; }
const char* matmul_backend_name() { return "oneDNN"; }
// oneDNN is built against libgomp and uses the OpenMP pool: nothing to configure.
void matmul_backend_set_threads(int) {}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // dnnl_sgemm is row-major and runs serially when called inside an OpenMP parallel region.
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A,
                                lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success)
    throw Error("sgemm: oneDNN failed with status " + std::to_string(int(st)) + " for M=" +
                std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
}
#else
MatmulBackend matmul_backend() { return MatmulBackend::OpenBLAS; }
const char* matmul_backend_name() { return "OpenBLAS"; }
// OpenBLAS always runs on one thread: its pthread pool would otherwise spin against the
// OpenMP pool. Large products are split across OpenMP threads below instead.
void matmul_backend_set_threads(int) { openblas_set_num_threads(1); }

namespace {
struct PinOpenBlasOnce {
  PinOpenBlasOnce() { openblas_set_num_threads(1); }
} pin_openblas_once;
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  auto call = [&](int64_t n0, int64_t n1) {
    const float* b = trans_b ? B + n0 * ldb : B + n0;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, int(M), int(n1 - n0), int(K), alpha, A,
                int(lda), b, int(ldb), beta, C + n0, int(ldc));
  };
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || 2.0 * M * N * K < 4e6 || N < 64 * threads) {
    call(0, N);
    return;
  }
  // Split the output columns (the weight rows for a linear layer) across threads, in
  // multiples of 16 so each slice keeps whole micro-kernel panels.
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t n0 = (N * t / nt) / 16 * 16, n1 = t + 1 == nt ? N : (N * (t + 1) / nt) / 16 * 16;
    if (n1 > n0) call(n0, n1);
  }
}
#endif

void linear_forward(float* y, const float* x, const float* weight, const float* bias, int64_t M,
                    int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = K;
  if (ldy == 0) ldy = N;
  float beta = 0.f;
  if (bias) {
    // Pre-fill y with the bias and accumulate the product onto it (one pass fewer than a
    // separate bias add after the product).
#pragma omp parallel for if (M * N > 65536 && !omp_in_parallel())
    for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, y + i * ldy);
    beta = 1.f;
  }
  sgemm(false, true, M, N, K, 1.f, x, ldx, weight, K, beta, y, ldy);
}

}  // namespace clip
