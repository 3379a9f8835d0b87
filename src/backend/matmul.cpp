#include "backend/matmul.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>
#include <cstdlib>
#include <string>

#include "backend/cpu_features.h"
#include "core/error.h"
#include "backend/simd_target.h"
#include "core/tensor.h"

#if defined(CLIP_HAVE_ONEDNN)
#include <dnnl.h>
#include <dnnl.hpp>
#if defined(CLIP_HAVE_ONEDNN_PACKED_SGEMM)
// Exported by libdnnl, declared in its internal src/cpu/gemm/gemm_pack.hpp (used by its RNN
// primitives); CMake checks that this library links with these declarations. Column-major
// BLAS conventions with pointer arguments; "P" as transa in sgemm_compute marks a packed A.
namespace dnnl::impl::cpu {
dnnl_status_t sgemm_pack_get_size(const char* identifier, const char* transa, const char* transb,
                                  const dnnl_dim_t* M, const dnnl_dim_t* N, const dnnl_dim_t* K,
                                  const dnnl_dim_t* lda, const dnnl_dim_t* ldb, size_t* size,
                                  bool* pack);
dnnl_status_t sgemm_pack(const char* identifier, const char* transa, const char* transb,
                         const dnnl_dim_t* M, const dnnl_dim_t* N, const dnnl_dim_t* K,
                         const dnnl_dim_t* lda, const dnnl_dim_t* ldb, const float* src,
                         float* dst);
dnnl_status_t sgemm_compute(const char* transa, const char* transb, const dnnl_dim_t* M,
                            const dnnl_dim_t* N, const dnnl_dim_t* K, const float* A,
                            const dnnl_dim_t* lda, const float* B, const dnnl_dim_t* ldb,
                            const float* beta, float* C, const dnnl_dim_t* ldc);
}  // namespace dnnl::impl::cpu
#endif
#endif
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);

namespace clip {

namespace {
// oneDNN sizes its team by omp_get_max_threads() and has no thread argument: a product capped
// to fewer threads lowers this thread's OpenMP setting (an ICV of the calling task only, not
// of other threads) for the call, and restores it however the call ends.
class ThreadCap {
 public:
  explicit ThreadCap(int threads) : saved_(omp_get_max_threads()) {
    if (threads > 0 && threads < saved_) omp_set_num_threads(threads);
    else saved_ = 0;
  }
  ~ThreadCap() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  ThreadCap(const ThreadCap&) = delete;
  ThreadCap& operator=(const ThreadCap&) = delete;

 private:
  int saved_;
};
}  // namespace

#if defined(CLIP_HAVE_ONEDNN)
MatmulBackend matmul_backend() { return MatmulBackend::OneDNN; }
const char* matmul_backend_name() { return "oneDNN"; }
// oneDNN is built against libgomp and uses the OpenMP pool: nothing to configure.
void matmul_backend_set_threads(int) {}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc, int threads) {
  if (M <= 0 || N <= 0) return;
  apply_isa_cap_to_onednn();
  const ThreadCap cap(threads);
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
           int64_t ldc, int max_threads) {
  if (M <= 0 || N <= 0) return;
  const ThreadCap cap(max_threads);
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

namespace {
// Pre-fills y with the bias (accumulate: adds it) so the product can accumulate onto y
// (beta = 1): one pass fewer than a separate bias add after the product.
void add_bias(float* y, const float* bias, int64_t M, int64_t N, int64_t ldy, bool accumulate) {
#pragma omp parallel for if (M * N > 65536 && !omp_in_parallel())
  for (int64_t i = 0; i < M; ++i) {
    float* r = y + i * ldy;
    if (accumulate) {
#pragma omp simd
      for (int64_t c = 0; c < N; ++c) r[c] += bias[c];
    } else {
      std::copy(bias, bias + N, r);
    }
  }
}
}  // namespace

// ---- bf16 products (oneDNN's matmul primitive) ----

const char* precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : p == Precision::INT8 ? "int8" : p == Precision::INT4 ? "int4" : "fp32";
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32" || name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  if (name == "int8") return Precision::INT8;
  if (name == "int4") return Precision::INT4;
  throw Error("--precision " + name + ": expected fp32, bf16, int8 or int4");
}

bool int8_available() {
#if defined(CLIP_HAVE_ONEDNN)
  return cpu_isa() >= Isa::AVX512_VNNI;
#else
  return false;
#endif
}

bool bf16_available() {
#if defined(CLIP_HAVE_ONEDNN)
  return cpu_isa() >= Isa::AVX512_BF16;
#else
  return false;
#endif
}

#if defined(CLIP_HAVE_ONEDNN)
namespace matmul_detail {
// A weight prepared once for oneDNN's matmul primitive (bf16 or int8): its blocked layout, and
// per product shape (Key) the primitive with the weights in the layout that primitive takes:
// the prepared one, or where oneDNN declines it for that shape, the layout it prefers, with W
// put into it once by `reorder` (kept for every shape that asks for it).
template <class Key>
class MatmulPrimitives {
 public:
  struct Prepared {
    dnnl::matmul primitive;
    dnnl::memory weights;
  };
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::memory::desc layout;  // the prepared layout of `weights`
  dnnl::memory weights;

  // describe(wei_layout): the primitive descriptor for this shape with the weights in
  // wei_layout (a zero desc: "any"); reorder(layout): W in that layout. `what` names the
  // precision in errors.
  template <class Describe, class Reorder>
  Prepared get(const Key& key, const Describe& describe, const Reorder& reorder, const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = primitives_.find(key);
    if (it != primitives_.end()) return it->second;
    try {
      Prepared p;
      try {
        p.primitive = dnnl::matmul(describe(layout));
        p.weights = weights;
      } catch (const dnnl::error&) {
        const auto pd = describe(dnnl::memory::desc());
        for (const auto& m : other_layouts_)
          if (m.get_desc() == pd.weights_desc()) p.weights = m;
        if (!p.weights) {
          other_layouts_.push_back(reorder(pd.weights_desc()));
          p.weights = other_layouts_.back();
        }
        p.primitive = dnnl::matmul(pd);
      }
      // One primitive per shape: a server's varying batches would grow this without end.
      if (primitives_.size() >= 256) primitives_.clear();
      return primitives_.emplace(key, p).first->second;
    } catch (const dnnl::error& e) {
      throw Error(std::string(what) + " product setup failed in oneDNN: " + e.what());
    }
  }

 private:
  std::mutex mutex_;
  std::map<Key, Prepared> primitives_;
  std::vector<dnnl::memory> other_layouts_;
};
}  // namespace matmul_detail

struct Bf16Weight {
  int64_t n = 0, k = 0;
  const float* source = nullptr;  // W, f32 [N, K]
  matmul_detail::MatmulPrimitives<std::tuple<int64_t, int64_t, bool>> cache;  // (M, ldy, accumulate)

  // wei_layout: the layout to ask for, or a zero desc for "any".
  dnnl::matmul::primitive_desc describe(int64_t M, int64_t ldy, bool accumulate,
                                        const dnnl::memory::desc& wei_layout = {}) const {
    using md = dnnl::memory::desc;
    const md src({M, k}, dnnl::memory::data_type::bf16, dnnl::memory::format_tag::ab);
    const md wei = wei_layout.is_zero() ? md({k, n}, dnnl::memory::data_type::bf16, dnnl::memory::format_tag::any)
                                        : wei_layout;
    const md dst({M, n}, dnnl::memory::data_type::f32, dnnl::memory::dims{ldy, 1});
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), attr, cache.engine);
  }
};

namespace {
// W [N, K] row-major is W^T [K, N] in "ba" order: reordered (and rounded to bf16) into `layout`.
dnnl::memory reorder_weights(Bf16Weight& b, const dnnl::memory::desc& layout) {
  const dnnl::engine& engine = b.cache.engine;
  dnnl::stream s(engine);
  dnnl::memory f32(dnnl::memory::desc({b.k, b.n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ba), engine,
                   const_cast<float*>(b.source));
  dnnl::memory out(layout, engine);
  dnnl::reorder(f32, out).execute(s, f32, out);
  s.wait();
  return out;
}
}  // namespace

std::shared_ptr<Bf16Weight> make_bf16_weight(const float* weight, int64_t N, int64_t K) {
  if (!bf16_available())
    throw Error("bf16 products need a CPU with AVX512-BF16 or AMX (this one: " + std::string(isa_name(cpu_isa())) +
                "; see clip info --system)");
  apply_isa_cap_to_onednn();
  auto b = std::make_shared<Bf16Weight>();
  b->n = N;
  b->k = K;
  b->source = weight;
  try {
    b->cache.layout = b->describe(64, N, false).weights_desc();
    b->cache.weights = reorder_weights(*b, b->cache.layout);
  } catch (const dnnl::error& e) {
    throw Error(std::string("bf16 weight preparation failed in oneDNN: ") + e.what());
  }
  return b;
}

void bf16_linear(Bf16Weight& b, float* y, const float* x, int64_t M, int64_t ldx, int64_t ldy, bool accumulate) {
  const int64_t K = b.k, N = b.n;
  if (ldy != N) {
    // oneDNN 2.6 has no fast kernel for a strided output (it falls back to its reference
    // implementation, 100x slower): the product goes to a dense buffer, then into y.
    thread_local std::vector<float> dense_buffer;
    if (int64_t(dense_buffer.size()) < M * N) dense_buffer.resize(size_t(M * N));
    float* dense = dense_buffer.data();
    bf16_linear(b, dense, x, M, ldx, N, false);
#pragma omp parallel for if (M * N > 65536 && !omp_in_parallel())
    for (int64_t i = 0; i < M; ++i) {
      float* r = y + i * ldy;
      const float* d = dense + i * N;
      if (accumulate)
        for (int64_t c = 0; c < N; ++c) r[c] += d[c];
      else
        std::copy(d, d + N, r);
    }
    return;
  }
  // x rounded to bf16 (nearest even), contiguous [M, K].
  // (This thread's buffer, written by the whole team through a plain pointer: each OpenMP
  // worker has its own, empty, thread_local.)
  thread_local std::vector<uint16_t> buffer;
  if (int64_t(buffer.size()) < M * K) buffer.resize(size_t(M * K));  // grown only: no refill
  uint16_t* xb = buffer.data();
#pragma omp parallel for if (M * K > 65536 && !omp_in_parallel())
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < K; ++j) xb[i * K + j] = f32_to_bf16(x[i * ldx + j]);
  const auto prep = b.cache.get(
      std::make_tuple(M, ldy, accumulate),
      [&](const dnnl::memory::desc& layout) { return b.describe(M, ldy, accumulate, layout); },
      [&](const dnnl::memory::desc& layout) { return reorder_weights(b, layout); }, "bf16");
  const dnnl::engine& engine = b.cache.engine;
  dnnl::stream s(engine);
  const auto& pd_src = dnnl::memory::desc({M, K}, dnnl::memory::data_type::bf16, dnnl::memory::format_tag::ab);
  dnnl::memory src(pd_src, engine, xb);
  dnnl::memory dst(dnnl::memory::desc({M, b.n}, dnnl::memory::data_type::f32, dnnl::memory::dims{ldy, 1}), engine, y);
  prep.primitive.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prep.weights}, {DNNL_ARG_DST, dst}});
  s.wait();
}
#else
struct Bf16Weight {};
std::shared_ptr<Bf16Weight> make_bf16_weight(const float*, int64_t, int64_t) {
  throw Error("bf16 products need the oneDNN backend (libdnnl-dev at build time)");
}
void bf16_linear(Bf16Weight&, float*, const float*, int64_t, int64_t, int64_t, bool) {}
#endif

// ---- int8 products (oneDNN's matmul primitive, u8 x s8 -> s32) ----
#if defined(CLIP_HAVE_ONEDNN)
struct Int8Weight {
  int64_t n = 0, k = 0;
  const float* source = nullptr;  // W, f32 [N, K]: quantized again for another layout
  std::vector<float> scale;       // [N] per output channel
  std::vector<int32_t> sum;       // [N] sum_k Wq[n, k]: the zero-point correction
  matmul_detail::MatmulPrimitives<int64_t> cache;  // by M

  dnnl::matmul::primitive_desc describe(int64_t M, const dnnl::memory::desc& wei_layout = {}) const {
    using md = dnnl::memory::desc;
    const md src({M, k}, dnnl::memory::data_type::u8, dnnl::memory::format_tag::ab);
    const md wei = wei_layout.is_zero() ? md({k, n}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any)
                                        : wei_layout;
    const md dst({M, n}, dnnl::memory::data_type::s32, dnnl::memory::format_tag::ab);
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), cache.engine);
  }
};

namespace {
// Round to nearest (halves away from zero) without libm, so the loops vectorise.
inline float round_half_away(float v) { return float(int32_t(v + (v >= 0.f ? 0.5f : -0.5f))); }
int8_t quantize_weight(float w, float inv_scale) {
  return int8_t(std::min(127.f, std::max(-127.f, round_half_away(w * inv_scale))));
}

// Wq [N, K] row-major (per-channel scales already in b.scale).
std::vector<int8_t> quantized_weights(const Int8Weight& b) {
  std::vector<int8_t> q(size_t(b.n * b.k));
#pragma omp parallel for if (b.n * b.k > 65536 && !omp_in_parallel())
  for (int64_t r = 0; r < b.n; ++r) {
    const float inv = b.scale[size_t(r)] > 0 ? 1.f / b.scale[size_t(r)] : 0.f;
    for (int64_t c = 0; c < b.k; ++c) q[size_t(r * b.k + c)] = quantize_weight(b.source[r * b.k + c], inv);
  }
  return q;
}

// Wq as [K, N] "ba" (= [N, K] row-major), reordered into `layout`.
dnnl::memory reorder_int8_weights(const Int8Weight& b, const std::vector<int8_t>& q, const dnnl::memory::desc& layout) {
  const dnnl::engine& engine = b.cache.engine;
  dnnl::stream s(engine);
  dnnl::memory plain(dnnl::memory::desc({b.k, b.n}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::ba),
                     engine, const_cast<int8_t*>(q.data()));
  dnnl::memory out(layout, engine);
  dnnl::reorder(plain, out).execute(s, plain, out);
  s.wait();
  return out;
}
}  // namespace

std::shared_ptr<Int8Weight> make_int8_weight(const float* weight, int64_t N, int64_t K) {
  if (!int8_available())
    throw Error("int8 products need a CPU with AVX512-VNNI or AMX (this one: " + std::string(isa_name(cpu_isa())) +
                "; see clip info --system)");
  apply_isa_cap_to_onednn();
  auto b = std::make_shared<Int8Weight>();
  b->n = N;
  b->k = K;
  b->source = weight;
  b->scale.assign(size_t(N), 0.f);
  b->sum.assign(size_t(N), 0);
  for (int64_t r = 0; r < N; ++r) {
    float mx = 0.f;
    for (int64_t c = 0; c < K; ++c) mx = std::max(mx, std::abs(weight[r * K + c]));
    b->scale[size_t(r)] = mx / 127.f;
  }
  const std::vector<int8_t> q = quantized_weights(*b);  // once: the sums and the prepared layout
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < K; ++c) b->sum[size_t(r)] += q[size_t(r * K + c)];
  try {
    b->cache.layout = b->describe(64).weights_desc();
    b->cache.weights = reorder_int8_weights(*b, q, b->cache.layout);
  } catch (const dnnl::error& e) {
    throw Error(std::string("int8 weight preparation failed in oneDNN: ") + e.what());
  }
  return b;
}

// y[M, N] (row stride ldy) (+)= dequantized x Wq^T + bias (bias may be null), in one pass.
void int8_linear(Int8Weight& b, float* y, const float* x, const float* bias, int64_t M, int64_t ldx, int64_t ldy,
                 bool accumulate) {
  const int64_t K = b.k, N = b.n;
  // This thread's buffers (each OpenMP worker has its own, empty, thread_local).
  thread_local std::vector<uint8_t> xq_buffer;
  thread_local std::vector<float> row_scale_buffer;
  thread_local std::vector<int32_t> row_zero_buffer, acc_buffer;
  // Grown, never shrunk: a resize back up would zero-fill on every call of another shape.
  auto fit = [](auto& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
  };
  fit(xq_buffer, M * K);
  fit(row_scale_buffer, M);
  fit(row_zero_buffer, M);
  fit(acc_buffer, M * N);
  uint8_t* xq = xq_buffer.data();
  float* row_scale = row_scale_buffer.data();
  int32_t* row_zero = row_zero_buffer.data();
  int32_t* acc = acc_buffer.data();
  // x per row: asymmetric uint8 over [min(0, min x), max(0, max x)], so 0 maps to an integer.
#pragma omp parallel for if (M > 1 && M * K > 16384 && !omp_in_parallel())
  for (int64_t i = 0; i < M; ++i) quantize_row_u8(x + i * ldx, K, xq + i * K, row_scale[i], row_zero[i]);
  const auto prep = b.cache.get(
      M, [&](const dnnl::memory::desc& layout) { return b.describe(M, layout); },
      [&](const dnnl::memory::desc& layout) { return reorder_int8_weights(b, quantized_weights(b), layout); }, "int8");
  const dnnl::engine& engine = b.cache.engine;
  dnnl::stream s(engine);
  dnnl::memory src(dnnl::memory::desc({M, K}, dnnl::memory::data_type::u8, dnnl::memory::format_tag::ab), engine, xq);
  dnnl::memory dst(dnnl::memory::desc({M, N}, dnnl::memory::data_type::s32, dnnl::memory::format_tag::ab), engine, acc);
  prep.primitive.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prep.weights}, {DNNL_ARG_DST, dst}});
  s.wait();
  const float* ws = b.scale.data();
  const int32_t* wsum = b.sum.data();
#pragma omp parallel for if (M > 1 && M * N > 16384 && !omp_in_parallel())
  for (int64_t i = 0; i < M; ++i) {
    float* out = y + i * ldy;
    const int32_t* a = acc + i * N;
    const float sx = row_scale[i];
    const int32_t zp = row_zero[i];
    if (accumulate && bias)
      for (int64_t c = 0; c < N; ++c) out[c] += sx * ws[c] * float(a[c] - zp * wsum[c]) + bias[c];
    else if (accumulate)
      for (int64_t c = 0; c < N; ++c) out[c] += sx * ws[c] * float(a[c] - zp * wsum[c]);
    else if (bias)
      for (int64_t c = 0; c < N; ++c) out[c] = sx * ws[c] * float(a[c] - zp * wsum[c]) + bias[c];
    else
      for (int64_t c = 0; c < N; ++c) out[c] = sx * ws[c] * float(a[c] - zp * wsum[c]);
  }
}
#else
struct Int8Weight {};
std::shared_ptr<Int8Weight> make_int8_weight(const float*, int64_t, int64_t) {
  throw Error("int8 products need the oneDNN backend (libdnnl-dev at build time)");
}
void int8_linear(Int8Weight&, float*, const float*, const float*, int64_t, int64_t, int64_t, bool) {}
#endif

PackedWeight::PackedWeight(const float* weight, int64_t N, int64_t K, bool pack, Precision precision)
    : n_(N), k_(K), weight_(weight) {
  if (precision == Precision::BF16) {
    bf16_ = make_bf16_weight(weight, N, K);
    return;
  }
  if (precision == Precision::INT8) {
    int8_ = make_int8_weight(weight, N, K);
    return;
  }
  if (precision == Precision::INT4) {
    blocks_ = block_weight_from_f32(BlockFormat::Q4_0, weight, N, K);
    return;
  }
  if (!pack) return;
#if defined(CLIP_HAVE_ONEDNN_PACKED_SGEMM)
  // Row-major y[M, N] = x[M, K] W^T is column-major y^T[N, M] = W^T' x^T with A = W stored as
  // a K x N column-major matrix (transa "T", lda K) and B = x^T (transb "N", ldb K); W is the
  // packed A. The row count given to the packing only steers its blocking: any M may be
  // multiplied later; a large one gives the compact layout (no padding for small-M blocking).
  namespace cpu = dnnl::impl::cpu;
  apply_isa_cap_to_onednn();
  const dnnl_dim_t m = N, rows = 1024, k = K, lda = K, ldb = K;
  size_t bytes = 0;
  bool worth_packing = false;
  if (N > 0 && K > 0 &&
      cpu::sgemm_pack_get_size("A", "T", "N", &m, &rows, &k, &lda, &ldb, &bytes,
                               &worth_packing) == dnnl_success &&
      worth_packing && bytes > 0) {
    float* storage = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!storage) throw Error("out of memory packing a " + std::to_string(N) + " x " +
                              std::to_string(K) + " weight");
    packed_.reset(storage, std::free);
    if (cpu::sgemm_pack("A", "T", "N", &m, &rows, &k, &lda, &ldb, weight, storage) ==
        dnnl_success)
      packed_threads_ = omp_in_parallel() ? 1 : omp_get_max_threads();
    else
      packed_.reset();
  }
#endif
}

PackedWeight::PackedWeight(std::shared_ptr<BlockWeight> blocks, const float* weight)
    : n_(blocks->n), k_(blocks->k), weight_(weight), blocks_(std::move(blocks)) {}

void linear_forward(float* y, const float* x, const PackedWeight& w, const float* bias, int64_t M,
                    int64_t ldx, int64_t ldy, bool accumulate) {
  const int64_t N = w.out_features(), K = w.in_features();
  if (ldx == 0) ldx = K;
  if (ldy == 0) ldy = N;
  if (M <= 0 || N <= 0) return;
  if (w.int8()) {  // the bias goes into its dequantization pass
    int8_linear(*w.int8(), y, x, bias, M, ldx, ldy, accumulate);
    return;
  }
  if (w.blocks()) {  // likewise
    block_linear(*w.blocks(), y, x, bias, M, ldx, ldy, accumulate);
    return;
  }
  if (bias) add_bias(y, bias, M, N, ldy, accumulate);
  const float beta = bias || accumulate ? 1.f : 0.f;
  if (w.bf16()) {
    bf16_linear(*w.bf16(), y, x, M, ldx, ldy, beta != 0.f);
    return;
  }
  const float* packed = w.packed_for(omp_in_parallel() ? 1 : omp_get_max_threads());
  if (!packed) {
    sgemm(false, true, M, N, K, 1.f, x, ldx, w.weight(), K, beta, y, ldy);
    return;
  }
#if defined(CLIP_HAVE_ONEDNN_PACKED_SGEMM)
  const dnnl_dim_t m = N, n = M, k = K, lda = K, ldb = ldx, ldc = ldy;
  const dnnl_status_t st = dnnl::impl::cpu::sgemm_compute("P", "N", &m, &n, &k, packed, &lda, x,
                                                          &ldb, &beta, y, &ldc);
  if (st != dnnl_success)
    throw Error("linear: oneDNN packed sgemm failed with status " + std::to_string(int(st)) +
                " for M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                std::to_string(K));
#endif
}

void linear_forward(float* y, const float* x, const float* weight, const float* bias, int64_t M,
                    int64_t N, int64_t K, int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = K;
  if (ldy == 0) ldy = N;
  float beta = 0.f;
  if (bias) {
    add_bias(y, bias, M, N, ldy, /*accumulate=*/false);
    beta = 1.f;
  }
  sgemm(false, true, M, N, K, 1.f, x, ldx, weight, K, beta, y, ldy);
}

namespace {

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace
}  // namespace clip

CLIP_AVX2_BEGIN
namespace clip {
namespace {

float dot_avx2(const float* a, const float* b, int64_t n) {
  // Four accumulators hide the FMA latency.
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float r = _mm_cvtss_f32(h);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

}  // namespace
}  // namespace clip
CLIP_AVX2_END

namespace clip {

void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
           int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
}

float dot(const float* a, const float* b, int64_t n) {
  return cpu_use_avx2() ? dot_avx2(a, b, n) : dot_scalar(a, b, n);
}

}  // namespace clip
