#pragma once
// The backend seam for matrix products. Every dense product in the encoders goes through
// these functions, so another backend (CUDA, a packed-weight CPU kernel) can be added here
// without touching the models. The CPU backend is chosen at build time (see docs/DESIGN.md,
// "Matrix products", for the measurements): oneDNN's sgemm when libdnnl is found, else
// OpenBLAS. All matrices are row-major f32.
#include <cstdint>

namespace clip {

enum class MatmulBackend { OneDNN, OpenBLAS };
MatmulBackend matmul_backend();
const char* matmul_backend_name();
// Called by set_num_threads(); not for direct use.
void matmul_backend_set_threads(int n);

// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major; op(X) = X or X^T.
// lda/ldb/ldc are the row strides of A, B, C as stored. Uses all compute threads when called
// from serial code; when called from inside an OpenMP parallel region it runs on the calling
// thread only (so per-head products can be issued in parallel).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

// A fully connected layer as PyTorch stores it: y[M, N] = x[M, K] @ W[N, K]^T + bias[N].
// bias may be null. ldx/ldy are row strides (default: K and N).
// Backward (for later): dx = dy @ W; dW += dy^T @ x; dbias += column sums of dy. Needs x.
void linear_forward(float* y, const float* x, const float* weight, const float* bias, int64_t M,
                    int64_t N, int64_t K, int64_t ldx = 0, int64_t ldy = 0);

}  // namespace clip
