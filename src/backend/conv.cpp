#include "backend/conv.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#if defined(CLIP_HAVE_ONEDNN)
#include <dnnl.hpp>
#endif

#include "backend/cpu_features.h"
#include "core/error.h"

namespace clip::conv {

struct ConvPrimitiveCache {
  std::mutex mutex;
#if defined(CLIP_HAVE_ONEDNN)
  struct Entry {
    dnnl::convolution_forward primitive;
    dnnl::memory weights;  // reordered into the primitive's preferred (blocked) layout
    dnnl::memory bias;
  };
  // (batch, height, width, relu, accumulate) -> primitive. Bounded: a caller cycling through
  // many batch sizes rebuilds primitives (cheap) but never duplicates the weights, which are
  // shared between entries whose primitives want the same layout (the usual case).
  std::map<std::tuple<int, int, int, bool, bool>, Entry> entries;
  std::vector<dnnl::memory> reordered_weights;
  static constexpr size_t kMaxEntries = 16;
#endif
};

namespace {

ConvBackend initial_backend() {
  const char* env = std::getenv("CLIP_CONV_BACKEND");
  if (!env) return ConvBackend::Auto;
  const std::string v = env;
  if (v == "gemm" || v == "im2col") return ConvBackend::Im2colGemm;
  if (v == "onednn" || v == "dnnl") return ConvBackend::OneDNN;
  return ConvBackend::Auto;
}

std::atomic<ConvBackend>& backend_setting() {
  static std::atomic<ConvBackend> b{initial_backend()};
  return b;
}

bool use_onednn(const Conv2dShape& s) {
  if (!have_onednn()) return false;
  switch (conv_backend()) {
    case ConvBackend::OneDNN: return true;
    case ConvBackend::Im2colGemm: return false;
    case ConvBackend::Auto: break;
  }
  return s.kernel == 1 || s.in_channels <= 128;
}

// Rows per im2col/GEMM chunk: large enough that OpenBLAS's repacking of the weight panel is
// amortised over many rows (its cost is ~1/rows of the product), small enough that the
// chunk's im2col rows and output stay in the last-level cache for the epilogue.
int64_t chunk_rows(int64_t K, int64_t N) {
  const int64_t budget_floats = int64_t(3) << 20;  // ~12 MiB: col + output of one chunk
  int64_t rows = budget_floats / std::max<int64_t>(1, K + N);
  rows = std::clamp<int64_t>(rows, 192, 1024);
  return rows / 16 * 16;
}

void sgemm_block(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, bool b_transposed, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), 1.0f, A, int(lda), B, int(ldb), accumulate ? 1.0f : 0.0f, C, int(ldc));
}

// out[r, j] = act(out[r, j] + bias[j] (+ residual[r, j])) for rows [0, rows), columns
// [col0, col1) of a row-major block with leading dimension ld.
void epilogue(float* out, const float* residual, int64_t rows, int64_t ld, int64_t col0,
              int64_t col1, const float* bias, bool relu) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * ld;
    if (residual) {
      const float* s = residual + r * ld;
      if (relu) {
        for (int64_t j = col0; j < col1; ++j) o[j] = std::max(o[j] + bias[j] + s[j], 0.0f);
      } else {
        for (int64_t j = col0; j < col1; ++j) o[j] = o[j] + bias[j] + s[j];
      }
    } else if (relu) {
      for (int64_t j = col0; j < col1; ++j) o[j] = std::max(o[j] + bias[j], 0.0f);
    } else {
      for (int64_t j = col0; j < col1; ++j) o[j] = o[j] + bias[j];
    }
  }
}

void check_shape(const Conv2dShape& s) {
  if (s.in_channels <= 0 || s.out_channels <= 0 || s.kernel <= 0 || s.stride <= 0 || s.padding < 0)
    throw Error("conv2d: invalid shape (in " + std::to_string(s.in_channels) + ", out " +
                std::to_string(s.out_channels) + ", kernel " + std::to_string(s.kernel) + ", stride " +
                std::to_string(s.stride) + ", padding " + std::to_string(s.padding) + ")");
}

#if defined(CLIP_HAVE_ONEDNN)
dnnl::engine& onednn_engine() {
  apply_isa_cap_to_onednn();
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

void conv2d_onednn(const ConvWeights& w, const float* in, int batch, int height, int width, int ho, int wo,
                   float* out, bool relu, const float* residual) {
  using namespace dnnl;
  const Conv2dShape& s = w.shape;
  const bool accumulate = residual != nullptr;
  if (accumulate && residual != out)
    std::memcpy(out, residual, sizeof(float) * size_t(batch) * ho * wo * s.out_channels);
  ConvPrimitiveCache& cache = *w.cache;
  ConvPrimitiveCache::Entry entry;  // handles are reference counted: a copy outlives a cache clear
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    auto key = std::make_tuple(batch, height, width, relu, accumulate);
    auto it = cache.entries.find(key);
    if (it == cache.entries.end()) {
      engine& eng = onednn_engine();
      const memory::dim k = s.kernel, st = s.stride, pad = s.padding;
      memory::desc src({batch, s.in_channels, height, width}, memory::data_type::f32, memory::format_tag::nhwc);
      memory::desc dst({batch, s.out_channels, ho, wo}, memory::data_type::f32, memory::format_tag::nhwc);
      memory::desc wany({s.out_channels, s.in_channels, k, k}, memory::data_type::f32, memory::format_tag::any);
      memory::desc bias({s.out_channels}, memory::data_type::f32, memory::format_tag::x);
      post_ops ops;
      if (accumulate) ops.append_sum(1.0f);
      if (relu) ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
      primitive_attr attr;
      attr.set_post_ops(ops);
      convolution_forward::primitive_desc pd(
          convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct, src, wany, bias, dst,
                                    {st, st}, {pad, pad}, {pad, pad}),
          attr, eng);
      ConvPrimitiveCache::Entry e;
      e.primitive = convolution_forward(pd);
      for (const memory& m : cache.reordered_weights)
        if (m.get_desc() == pd.weights_desc()) e.weights = m;
      if (!e.weights) {
        memory plain({{s.out_channels, s.in_channels, k, k}, memory::data_type::f32, memory::format_tag::ohwi}, eng,
                     const_cast<float*>(w.weight.data()));
        e.weights = memory(pd.weights_desc(), eng);
        stream st_reorder(eng);
        reorder(plain, e.weights).execute(st_reorder, plain, e.weights);
        st_reorder.wait();
        cache.reordered_weights.push_back(e.weights);
      }
      if (cache.entries.size() >= ConvPrimitiveCache::kMaxEntries) cache.entries.clear();
      e.bias = memory(bias, eng, const_cast<float*>(w.bias.data()));
      it = cache.entries.emplace(key, std::move(e)).first;
    }
    entry = it->second;
  }
  engine& eng = onednn_engine();
  stream strm(eng);
  memory src_m({{batch, s.in_channels, height, width}, memory::data_type::f32, memory::format_tag::nhwc}, eng,
               const_cast<float*>(in));
  memory dst_m({{batch, s.out_channels, ho, wo}, memory::data_type::f32, memory::format_tag::nhwc}, eng, out);
  entry.primitive.execute(strm, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, entry.weights},
                                 {DNNL_ARG_BIAS, entry.bias}, {DNNL_ARG_DST, dst_m}});
  strm.wait();
}
#endif

}  // namespace

void set_conv_backend(ConvBackend backend) { backend_setting().store(backend); }
ConvBackend conv_backend() { return backend_setting().load(); }
bool have_onednn() {
#if defined(CLIP_HAVE_ONEDNN)
  return true;
#else
  return false;
#endif
}

BlasSingleThreadScope::BlasSingleThreadScope() : previous_(openblas_get_num_threads()) {
  if (previous_ != 1) openblas_set_num_threads(1);
}
BlasSingleThreadScope::~BlasSingleThreadScope() {
  if (previous_ != 1) openblas_set_num_threads(previous_);
}

ConvWeights make_conv_weights(const Conv2dShape& shape, const float* weight_oihw, const float* bias) {
  check_shape(shape);
  ConvWeights w;
  w.shape = shape;
  const int O = shape.out_channels, I = shape.in_channels, k = shape.kernel;
  w.weight.resize(size_t(O) * I * k * k);
  for (int o = 0; o < O; ++o)
    for (int i = 0; i < I; ++i)
      for (int kh = 0; kh < k; ++kh)
        for (int kw = 0; kw < k; ++kw)
          w.weight[((size_t(o) * k + kh) * k + kw) * I + i] = weight_oihw[((size_t(o) * I + i) * k + kh) * k + kw];
  w.bias.assign(size_t(O), 0.0f);
  if (bias) std::copy(bias, bias + O, w.bias.begin());
  w.cache = std::make_shared<ConvPrimitiveCache>();
  return w;
}

ConvWeights fold_batch_norm(const ConvWeights& conv, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, float eps) {
  ConvWeights w = conv;
  w.cache = std::make_shared<ConvPrimitiveCache>();
  const int O = conv.shape.out_channels;
  const size_t per_out = conv.weight.size() / size_t(O);
  for (int o = 0; o < O; ++o) {
    if (!(running_var[o] + eps > 0.0f))
      throw Error("batch norm: running_var[" + std::to_string(o) + "] + eps is not positive");
    const double s = double(gamma[o]) / std::sqrt(double(running_var[o]) + double(eps));
    for (size_t i = 0; i < per_out; ++i) w.weight[o * per_out + i] = float(double(conv.weight[o * per_out + i]) * s);
    w.bias[o] = float((double(conv.bias[o]) - double(running_mean[o])) * s + double(beta[o]));
  }
  return w;
}

void im2col_nhwc(const float* in, int height, int width, int channels, int kernel, int stride,
                 int padding, int64_t row_begin, int64_t row_end, float* col) {
  const int ho = conv_out_size(height, kernel, stride, padding);
  const int wo = conv_out_size(width, kernel, stride, padding);
  const int64_t plane = int64_t(ho) * wo;
  const int64_t K = int64_t(kernel) * kernel * channels;
  const size_t run = size_t(channels) * sizeof(float);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / plane;
    const int oh = int((r % plane) / wo), ow = int(r % wo);
    float* dst = col + (r - row_begin) * K;
    const float* img = in + n * int64_t(height) * width * channels;
    for (int kh = 0; kh < kernel; ++kh) {
      const int ih = oh * stride - padding + kh;
      for (int kw = 0; kw < kernel; ++kw, dst += channels) {
        const int iw = ow * stride - padding + kw;
        if (ih < 0 || ih >= height || iw < 0 || iw >= width)
          std::memset(dst, 0, run);
        else
          std::memcpy(dst, img + (int64_t(ih) * width + iw) * channels, run);
      }
    }
  }
}

void prepare_conv_products(ConvWeights& w, Precision precision) {
  // bf16: measured slower than the f32 backends on RN50 (Zen 4, AVX512-BF16 without AMX: 2.28 s
  // against 1.88 s at batch 32; oneDNN's direct f32 convolutions beat im2col + bf16 matmul in
  // the stem and layer1), so the convolutions stay f32.
  if (precision == Precision::F32 || precision == Precision::BF16) {
    w.prepared.reset();
    return;
  }
  const Conv2dShape& s = w.shape;
  w.prepared = std::make_shared<const PackedWeight>(w.weight.data(), s.out_channels,
                                                    int64_t(s.kernel) * s.kernel * s.in_channels, false, precision);
}

namespace {
// The convolution as products of im2col rows (output pixels) with the prepared weight: row
// chunks one after another, each gathered by all threads and multiplied by linear_forward
// with all threads (its low-precision path quantizes the chunk's rows), then bias, residual
// and ReLU in f32. (Not one chunk per thread inside a parallel region, as the f32 path does:
// oneDNN's bf16 / int8 matmul run that way gave wrong features, cosine 0.43 to f32 at batch 8.)
void conv2d_prepared(const ConvWeights& w, const float* in, int height, int width, int64_t M, float* out, bool relu,
                     const float* residual) {
  const Conv2dShape& s = w.shape;
  const int64_t K = int64_t(s.kernel) * s.kernel * s.in_channels, N = s.out_channels;
  const bool in_place = residual != nullptr && residual == out;
  if (in_place) residual = nullptr;
  const bool pointwise = s.kernel == 1 && s.stride == 1 && s.padding == 0;
  const float* bias = w.bias.data();
  // About 4 MB of gathered rows a chunk.
  const int64_t rows = std::max<int64_t>(256, (int64_t(1) << 20) / std::max<int64_t>(K, 1));
  std::unique_ptr<float[]> col;
  if (!pointwise) col.reset(new float[size_t(std::min(rows, M) * K)]);
  for (int64_t r0 = 0; r0 < M; r0 += rows) {
    const int64_t r1 = std::min(M, r0 + rows);
    const float* A = in + r0 * K;
    if (!pointwise) {
#pragma omp parallel for schedule(static)
      for (int64_t r = r0; r < r1; ++r)
        im2col_nhwc(in, height, width, s.in_channels, s.kernel, s.stride, s.padding, r, r + 1, col.get() + (r - r0) * K);
      A = col.get();
    }
    float* o = out + r0 * N;
    linear_forward(o, A, *w.prepared, nullptr, r1 - r0, K, N, in_place);
#pragma omp parallel for schedule(static)
    for (int64_t e0 = 0; e0 < r1 - r0; e0 += 16) {
      const int64_t e1 = std::min(r1 - r0, e0 + 16);
      epilogue(o + e0 * N, residual ? residual + (r0 + e0) * N : nullptr, e1 - e0, N, 0, N, bias, relu);
    }
  }
}
}  // namespace

void conv2d_nhwc(const ConvWeights& w, const float* in, int batch, int height, int width, float* out,
                 bool relu, const float* residual) {
  const Conv2dShape& s = w.shape;
  check_shape(s);
  const int ho = conv_out_size(height, s.kernel, s.stride, s.padding);
  const int wo = conv_out_size(width, s.kernel, s.stride, s.padding);
  if (batch <= 0 || ho <= 0 || wo <= 0)
    throw Error("conv2d: input " + std::to_string(height) + "x" + std::to_string(width) +
                " is too small for a " + std::to_string(s.kernel) + "x" + std::to_string(s.kernel) + " kernel");
  if (!w.cache || w.weight.size() != size_t(s.out_channels) * s.in_channels * s.kernel * s.kernel ||
      w.bias.size() != size_t(s.out_channels))
    throw Error("conv2d: weights were not made by make_conv_weights / fold_batch_norm");
  if (w.prepared && w.prepared->weight() == w.weight.data())
    return conv2d_prepared(w, in, height, width, int64_t(batch) * ho * wo, out, relu, residual);
#if defined(CLIP_HAVE_ONEDNN)
  if (use_onednn(s)) return conv2d_onednn(w, in, batch, height, width, ho, wo, out, relu, residual);
#endif
  const int64_t M = int64_t(batch) * ho * wo;
  const int64_t K = int64_t(s.kernel) * s.kernel * s.in_channels;
  // In place (residual == out): the product accumulates onto it, the epilogue adds the bias.
  const bool in_place = residual != nullptr && residual == out;
  if (in_place) residual = nullptr;
  const int64_t N = s.out_channels;
  const bool pointwise = s.kernel == 1 && s.stride == 1 && s.padding == 0;
  const int threads = omp_get_max_threads();
  const float* W = w.weight.data();
  const float* bias = w.bias.data();
  BlasSingleThreadScope single_threaded_blas;

  if (threads > 1 && M < int64_t(threads) * 256) {
    // Few output pixels (late stages at batch 1): gather all rows once, split the columns,
    // so every thread gets a product with all the rows.
    std::unique_ptr<float[]> col;
    const float* A = in;
    if (!pointwise) {
      col.reset(new float[size_t(M * K)]);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < M; ++r) im2col_nhwc(in, height, width, s.in_channels, s.kernel, s.stride, s.padding, r, r + 1, col.get() + r * K);
      A = col.get();
    }
    const int64_t step = std::max<int64_t>(16, (N + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < N; c0 += step) {
      const int64_t c1 = std::min(N, c0 + step);
      sgemm_block(M, c1 - c0, K, A, K, W + c0 * K, K, true, out + c0, N, in_place);
      epilogue(out, residual, M, N, c0, c1, bias, relu);
    }
    return;
  }

  // At least one chunk per thread.
  const int64_t rows = std::min(chunk_rows(K, N), (M + threads - 1) / threads + 15) / 16 * 16;
  const int64_t chunks = (M + rows - 1) / rows;
  std::vector<std::unique_ptr<float[]>> cols(static_cast<size_t>(threads));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * rows, r1 = std::min(M, r0 + rows);
    const float* A = in + r0 * K;
    if (!pointwise) {
      auto& buf = cols[size_t(omp_get_thread_num())];
      if (!buf) buf.reset(new float[size_t(rows * K)]);
      im2col_nhwc(in, height, width, s.in_channels, s.kernel, s.stride, s.padding, r0, r1, buf.get());
      A = buf.get();
    }
    float* o = out + r0 * N;
    sgemm_block(r1 - r0, N, K, A, K, W, K, true, o, N, in_place);
    epilogue(o, residual ? residual + r0 * N : nullptr, r1 - r0, N, 0, N, bias, relu);
  }
}

void nchw_to_nhwc(const float* in, int batch, int channels, int height, int width, float* out) {
  const int64_t plane = int64_t(height) * width;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t p = 0; p < plane; ++p)
      for (int c = 0; c < channels; ++c) out[(n * plane + p) * channels + c] = in[(n * channels + c) * plane + p];
}

void nhwc_to_nchw(const float* in, int batch, int height, int width, int channels, float* out) {
  const int64_t plane = int64_t(height) * width;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < batch; ++n)
    for (int c = 0; c < channels; ++c)
      for (int64_t p = 0; p < plane; ++p) out[(n * channels + c) * plane + p] = in[(n * plane + p) * channels + c];
}

void parallel_sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                    int64_t ldb, bool b_transposed, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  BlasSingleThreadScope single_threaded_blas;
  const int threads = omp_get_max_threads();
  if (threads == 1 || M * N * K < (int64_t(1) << 18)) {
    sgemm_block(M, N, K, A, lda, B, ldb, b_transposed, C, ldc, accumulate);
    return;
  }
  if (M >= int64_t(threads) * 32) {
    const int64_t step = (M + threads - 1) / threads;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int64_t r0 = t * step, r1 = std::min(M, r0 + step);
      if (r0 < r1) sgemm_block(r1 - r0, N, K, A + r0 * lda, lda, B, ldb, b_transposed, C + r0 * ldc, ldc, accumulate);
    }
  } else {
    const int64_t step = std::max<int64_t>(16, (N + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < N; c0 += step) {
      const int64_t c1 = std::min(N, c0 + step);
      const float* Bc = b_transposed ? B + c0 * ldb : B + c0;
      sgemm_block(M, c1 - c0, K, A, lda, Bc, ldb, b_transposed, C + c0, ldc, accumulate);
    }
  }
}

}  // namespace clip::conv
