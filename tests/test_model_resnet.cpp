// The ModifiedResNet image encoder against tools/reference_resnet.py (a PyTorch
// re-implementation of openai/CLIP's ModifiedResNet with seeded, perturbed weights and
// non-trivial batch-norm statistics), plus the convolution kernels against naive loops.
//
// Tolerance: features within 1e-4 max abs and cosine >= 0.99999. Both sides accumulate in
// float32, but in different orders (oneDNN's blocked direct convolution in PyTorch, im2col +
// OpenBLAS here, BN folded into the weights here, applied after the convolution there). Each
// dot product of K terms then differs by a few ulps of its magnitude times ~sqrt(K) (K up to
// 4608 in RN50's layer4), i.e. ~1e-6 relative per layer; through ~50 layers this grows to
// ~1e-5 relative, and the features are O(1-10), so 1e-4 absolute has headroom of a few x
// while any real mistake (a wrong tap, a missed pool, BN applied twice) is >= 1e-2.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backend/conv.h"
#include "core/error.h"
#include "core/io.h"
#include "model/resnet.h"
#include "nn/conv_layers.h"
#include "model/weights.h"

namespace {

namespace fs = std::filesystem;
using clip::LoadedCheckpoint;
using clip::ResNetVisual;
using clip::Tensor;

// A minimal safetensors reader, so this test does not depend on the loader: F32 tensors as
// zero-copy views into the mmap; other dtypes (num_batches_tracked) are skipped as the loader
// does.
LoadedCheckpoint read_safetensors(const std::string& path) {
  auto file = clip::MappedFile::open(path);
  if (file->size() < 8) throw clip::Error(path + ": too short");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);
  if (header_len > file->size() - 8) throw clip::Error(path + ": bad header length");
  auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(file->data()) + 8, header_len));
  const uint8_t* base = file->data() + 8 + header_len;
  LoadedCheckpoint ck;
  ck.weights_path = path;
  ck.keepalive = file;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__" || info.at("dtype") != "F32") continue;
    std::vector<int64_t> shape = info.at("shape").get<std::vector<int64_t>>();
    auto off = info.at("data_offsets").get<std::vector<uint64_t>>();
    ck.tensors[name] = Tensor::view(const_cast<uint8_t*>(base + off.at(0)), shape, clip::DType::F32, file);
  }
  return ck;
}

struct Diff {
  double max_abs = 0, max_ref = 0, min_cosine = 1;
};

// Max abs difference over everything; cosine per row of `cols` values.
Diff compare(const float* got, const float* want, int64_t n, int64_t cols) {
  Diff d;
  for (int64_t r = 0; r < n / cols; ++r) {
    double dot = 0, a2 = 0, b2 = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double a = got[r * cols + c], b = want[r * cols + c];
      d.max_abs = std::max(d.max_abs, std::fabs(a - b));
      d.max_ref = std::max(d.max_ref, std::fabs(b));
      dot += a * b, a2 += a * a, b2 += b * b;
    }
    d.min_cosine = std::min(d.min_cosine, dot / std::sqrt(a2 * b2 + 1e-300));
  }
  return d;
}

// Encodes golden["pixels"] and checks every stage and the features.
void check_against_golden(const LoadedCheckpoint& ck, const LoadedCheckpoint& golden, double feature_tol) {
  ResNetVisual enc(ck);
  const Tensor& pixels = golden.tensors.at("pixels");
  const Tensor& want = golden.tensors.at("features");
  const int batch = int(pixels.shape[0]);
  ASSERT_EQ(pixels.shape[2], enc.image_size());
  ASSERT_EQ(want.shape[1], enc.embed_dim());
  std::map<std::string, Diff> stages;
  std::vector<float> out(size_t(batch) * enc.embed_dim());
  enc.encode(pixels.f32(), batch, out.data(), [&](const std::string& stage, const float* data, const std::vector<int64_t>& shape) {
    const std::string key = stage == "attnpool" ? "features" : stage;
    auto it = golden.tensors.find(key);
    ASSERT_NE(it, golden.tensors.end()) << stage;
    ASSERT_EQ(it->second.shape, shape) << stage;
    const int64_t cols = it->second.numel() / shape[0];
    stages[stage] = compare(data, it->second.f32(), it->second.numel(), cols);
  });
  ASSERT_EQ(stages.size(), 6u);
  std::string report;
  for (const char* s : {"stem", "layer1", "layer2", "layer3", "layer4", "attnpool"}) {
    const Diff& d = stages.at(s);
    report += std::string(s) + ": max|diff| " + std::to_string(d.max_abs) + " (max|ref| " + std::to_string(d.max_ref) +
              ", min cos " + std::to_string(d.min_cosine) + ")\n";
  }
  SCOPED_TRACE(report);
  std::printf("%s", report.c_str());
  // Stages localise a mismatch; relative bound since stage magnitudes vary.
  for (const char* s : {"stem", "layer1", "layer2", "layer3", "layer4"}) {
    const Diff& d = stages.at(s);
    EXPECT_LE(d.max_abs, 1e-5 * std::max(1.0, d.max_ref)) << s;
    EXPECT_GE(d.min_cosine, 0.99999) << s;
  }
  const Diff f = compare(out.data(), want.f32(), want.numel(), want.shape[1]);
  EXPECT_LE(f.max_abs, feature_tol);
  EXPECT_GE(f.min_cosine, 0.99999);
  EXPECT_GT(f.max_ref, 0.5) << "features too small for the tolerance to mean anything";
}

std::string data_dir() { return std::string(CLIP_SOURCE_DIR) + "/tests/data/resnet/"; }

// Runs the body once per available convolution backend, restoring the setting afterwards.
template <class F>
void for_each_backend(F&& body) {
  const clip::conv::ConvBackend saved = clip::conv::conv_backend();
  std::vector<std::pair<const char*, clip::conv::ConvBackend>> backends = {
      {"auto", clip::conv::ConvBackend::Auto}, {"im2col+gemm", clip::conv::ConvBackend::Im2colGemm}};
  if (clip::conv::have_onednn()) backends.push_back({"onednn", clip::conv::ConvBackend::OneDNN});
  for (auto& [name, b] : backends) {
    SCOPED_TRACE(std::string("conv backend ") + name);
    clip::conv::set_conv_backend(b);
    body();
  }
  clip::conv::set_conv_backend(saved);
}

TEST(ResNetVisual, TinyMatchesPyTorchReference) {
  const LoadedCheckpoint ck = read_safetensors(data_dir() + "tiny.safetensors");
  const LoadedCheckpoint golden = read_safetensors(data_dir() + "tiny_golden.safetensors");
  ResNetVisual enc(ck);
  EXPECT_EQ(enc.config().resnet_layers, (std::vector<int>{2, 1, 1, 1}));
  EXPECT_EQ(enc.config().width, 8);
  EXPECT_EQ(enc.config().image_size, 64);
  EXPECT_EQ(enc.config().heads, 4);
  EXPECT_EQ(enc.embed_dim(), 32);
  for_each_backend([&] { check_against_golden(ck, golden, 1e-4); });
}

TEST(ResNetVisual, BatchEqualsOneByOne) {
  const LoadedCheckpoint ck = read_safetensors(data_dir() + "tiny.safetensors");
  const LoadedCheckpoint golden = read_safetensors(data_dir() + "tiny_golden.safetensors");
  ResNetVisual enc(ck);
  const Tensor& pixels = golden.tensors.at("pixels");
  const int batch = int(pixels.shape[0]);
  const int64_t per_image = pixels.numel() / batch, E = enc.embed_dim();
  std::vector<float> all(static_cast<size_t>(batch * E)), one(static_cast<size_t>(E));
  enc.encode(pixels.f32(), batch, all.data());
  for (int b = 0; b < batch; ++b) {
    enc.encode(pixels.f32() + b * per_image, 1, one.data());
    for (int64_t c = 0; c < E; ++c) EXPECT_NEAR(one[c], all[b * E + c], 1e-5 * std::max(1.0f, std::fabs(all[b * E + c]))) << "image " << b << " feature " << c;
  }
  // Different images give different features (the test above could not pass on a constant).
  double diff = 0;
  for (int64_t c = 0; c < E; ++c) diff += std::fabs(all[c] - all[E + c]);
  EXPECT_GT(diff, 1.0);
}

TEST(ResNetVisual, ConfigFromCheckpointMustMatchShapes) {
  LoadedCheckpoint ck = read_safetensors(data_dir() + "tiny.safetensors");
  ck.config.vision.resnet_layers = {2, 1, 1, 1};
  ck.config.vision.width = 8;
  ck.config.vision.image_size = 64;
  ck.config.vision.heads = 2;  // open_clip head width 128: honoured
  EXPECT_EQ(ResNetVisual(ck).config().heads, 2);
  ck.config.vision.resnet_layers = {3, 4, 6, 3};
  try {
    ResNetVisual enc(ck);
    FAIL() << "layer mismatch accepted";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers"), std::string::npos) << e.what();
  }
  ck.config.vision.resnet_layers = {2, 1, 1, 1};
  ck.config.vision.image_size = 96;
  EXPECT_THROW(ResNetVisual enc(ck), clip::Error);
}

TEST(ResNetVisual, MissingOrMisshapenTensorNamesIt) {
  const LoadedCheckpoint base = read_safetensors(data_dir() + "tiny.safetensors");
  for (const std::string name : {"visual.layer3.0.bn2.running_var", "visual.attnpool.k_proj.weight",
                                 "visual.layer2.0.downsample.0.weight", "visual.conv2.weight"}) {
    LoadedCheckpoint ck = base;
    ck.tensors.erase(name);
    try {
      ResNetVisual enc(ck);
      FAIL() << "missing " << name << " accepted";
    } catch (const clip::Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("tiny.safetensors"), std::string::npos) << e.what();
    }
  }
  LoadedCheckpoint ck = base;
  Tensor& t = ck.tensors.at("visual.layer1.0.conv2.weight");
  t.shape = {8, 8, 9, 1};
  try {
    ResNetVisual enc(ck);
    FAIL() << "misshapen tensor accepted";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("visual.layer1.0.conv2.weight"), std::string::npos) << e.what();
  }
  LoadedCheckpoint empty;
  EXPECT_THROW(ResNetVisual enc(empty), clip::Error);
  // A tensor the tower would ignore is an error too: a convolution's bias.
  LoadedCheckpoint with_bias = base;
  with_bias.tensors.emplace("visual.layer1.0.conv2.bias", base.tensors.at("visual.layer1.0.bn2.bias"));
  try {
    ResNetVisual enc(with_bias);
    FAIL() << "a convolution bias was accepted";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected tensor 'visual.layer1.0.conv2.bias'"), std::string::npos) << e.what();
  }
}

// ---- the kernels against naive loops ---------------------------------------------------

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Direct convolution, NCHW/OIHW, double accumulation.
std::vector<float> naive_conv_nchw(const std::vector<float>& in, int n, int c, int h, int w, const std::vector<float>& wt,
                                   const std::vector<float>& bias, int o, int k, int stride, int pad) {
  const int ho = clip::conv::conv_out_size(h, k, stride, pad), wo = clip::conv::conv_out_size(w, k, stride, pad);
  std::vector<float> out(size_t(n) * o * ho * wo);
  for (int b = 0; b < n; ++b)
    for (int oc = 0; oc < o; ++oc)
      for (int y = 0; y < ho; ++y)
        for (int x = 0; x < wo; ++x) {
          double s = bias[oc];
          for (int ic = 0; ic < c; ++ic)
            for (int kh = 0; kh < k; ++kh)
              for (int kw = 0; kw < k; ++kw) {
                const int iy = y * stride - pad + kh, ix = x * stride - pad + kw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                s += double(in[((size_t(b) * c + ic) * h + iy) * w + ix]) * wt[((size_t(oc) * c + ic) * k + kh) * k + kw];
              }
          out[((size_t(b) * o + oc) * ho + y) * wo + x] = float(s);
        }
  return out;
}

struct ConvCase {
  int n, c, h, w, o, k, stride, pad;
};

TEST(Conv2dNhwc, MatchesDirectConvolution) {
  // Small M (column split) and large M (row chunks), 1x1 (no im2col) and kxk, strides, pads,
  // non-square inputs, odd sizes.
  const ConvCase cases[] = {{1, 3, 9, 7, 5, 3, 2, 1},   {2, 4, 5, 5, 6, 3, 1, 1},   {1, 16, 4, 4, 40, 1, 1, 0},
                            {3, 8, 33, 17, 12, 3, 1, 1}, {2, 5, 31, 29, 7, 3, 2, 1}, {2, 24, 30, 30, 20, 1, 1, 0},
                            {1, 6, 12, 10, 9, 5, 2, 2},  {2, 4, 8, 8, 3, 2, 2, 0}};
  uint32_t seed = 1;
  for (const ConvCase& t : cases) {
    SCOPED_TRACE(testing::Message() << "n" << t.n << " c" << t.c << " " << t.h << "x" << t.w << " o" << t.o << " k" << t.k
                                    << " s" << t.stride << " p" << t.pad);
    const auto in = random_vector(size_t(t.n) * t.c * t.h * t.w, seed++);
    const auto wt = random_vector(size_t(t.o) * t.c * t.k * t.k, seed++);
    const auto bias = random_vector(size_t(t.o), seed++);
    const auto want = naive_conv_nchw(in, t.n, t.c, t.h, t.w, wt, bias, t.o, t.k, t.stride, t.pad);
    const int ho = clip::conv::conv_out_size(t.h, t.k, t.stride, t.pad), wo = clip::conv::conv_out_size(t.w, t.k, t.stride, t.pad);
    const auto residual = random_vector(size_t(t.n) * ho * wo * t.o, seed++);
    std::vector<float> in_nhwc(in.size()), out(size_t(t.n) * ho * wo * t.o), out_nchw(out.size());
    clip::conv::nchw_to_nhwc(in.data(), t.n, t.c, t.h, t.w, in_nhwc.data());
    const auto cw = clip::conv::make_conv_weights({t.c, t.o, t.k, t.stride, t.pad}, wt.data(), bias.data());
    for_each_backend([&] {
    for (int variant = 0; variant < 4; ++variant) {
      // 0: plain, 1: ReLU, 2: + residual, ReLU, 3: + residual in place (residual == out), ReLU
      const bool relu = variant >= 1;
      const float* res = variant >= 2 ? residual.data() : nullptr;
      if (variant == 3) {
        out = residual;
        clip::conv::conv2d_nhwc(cw, in_nhwc.data(), t.n, t.h, t.w, out.data(), relu, out.data());
      } else {
        clip::conv::conv2d_nhwc(cw, in_nhwc.data(), t.n, t.h, t.w, out.data(), relu, res);
      }
      clip::conv::nhwc_to_nchw(out.data(), t.n, ho, wo, t.o, out_nchw.data());
      for (int b = 0; b < t.n; ++b)
        for (int oc = 0; oc < t.o; ++oc)
          for (int p = 0; p < ho * wo; ++p) {
            float v = want[(size_t(b) * t.o + oc) * ho * wo + p];
            if (res) v += residual[(size_t(b) * ho * wo + p) * t.o + oc];
            if (relu) v = std::max(v, 0.0f);
            ASSERT_NEAR(out_nchw[(size_t(b) * t.o + oc) * ho * wo + p], v, 1e-4) << "variant " << variant;
          }
    }
    });
  }
}

TEST(Conv2dNhwc, LargeBatchUsesRowChunks) {
  // M = 4*40*40 = 6400 rows > one chunk: exercises several chunks and a ragged last one.
  const int n = 4, c = 16, h = 40, w = 40, o = 32;
  const auto in = random_vector(size_t(n) * c * h * w, 11);
  const auto wt = random_vector(size_t(o) * c * 9, 12);
  const std::vector<float> bias(size_t(o), 0.5f);
  const auto want = naive_conv_nchw(in, n, c, h, w, wt, bias, o, 3, 1, 1);
  std::vector<float> in_nhwc(in.size()), out(size_t(n) * h * w * o), got(out.size());
  clip::conv::nchw_to_nhwc(in.data(), n, c, h, w, in_nhwc.data());
  const auto cw = clip::conv::make_conv_weights({c, o, 3, 1, 1}, wt.data(), bias.data());
  for_each_backend([&] {
    clip::conv::conv2d_nhwc(cw, in_nhwc.data(), n, h, w, out.data(), false);
    clip::conv::nhwc_to_nchw(out.data(), n, h, w, o, got.data());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << i;
  });
}

TEST(Conv2dNhwc, FoldedBatchNormEqualsConvThenBatchNorm) {
  const int n = 2, c = 5, h = 6, w = 7, o = 4;
  const auto in = random_vector(size_t(n) * c * h * w, 21);
  const auto wt = random_vector(size_t(o) * c * 9, 22);
  const std::vector<float> zero(o, 0.0f), gamma{1.5f, -0.5f, 0.25f, 2.0f}, beta{0.1f, -0.2f, 0.3f, 0.0f},
      mean{0.5f, -1.0f, 2.0f, 0.0f}, var{0.5f, 2.0f, 0.01f, 1.0f};
  const auto conv = naive_conv_nchw(in, n, c, h, w, wt, zero, o, 3, 1, 1);
  std::vector<float> in_nhwc(in.size()), out(conv.size()), got(conv.size());
  clip::conv::nchw_to_nhwc(in.data(), n, c, h, w, in_nhwc.data());
  const auto folded = clip::conv::fold_batch_norm(clip::conv::make_conv_weights({c, o, 3, 1, 1}, wt.data()), gamma.data(),
                                                  beta.data(), mean.data(), var.data(), 1e-5f);
  clip::conv::conv2d_nhwc(folded, in_nhwc.data(), n, h, w, out.data(), false);
  clip::conv::nhwc_to_nchw(out.data(), n, h, w, o, got.data());
  for (int b = 0; b < n; ++b)
    for (int oc = 0; oc < o; ++oc)
      for (int p = 0; p < h * w; ++p) {
        const size_t i = (size_t(b) * o + oc) * h * w + p;
        const double want = (conv[i] - mean[oc]) / std::sqrt(double(var[oc]) + 1e-5) * gamma[oc] + beta[oc];
        ASSERT_NEAR(got[i], want, 1e-4 * std::max(1.0, std::fabs(want)));
      }
  const std::vector<float> bad_var{1.0f, -1.0f, 1.0f, 1.0f};
  EXPECT_THROW(clip::conv::fold_batch_norm(clip::conv::make_conv_weights({c, o, 3, 1, 1}, wt.data()), gamma.data(), beta.data(),
                                           mean.data(), bad_var.data()),
               clip::Error);
}

TEST(Conv2dNhwc, AvgPoolAndBadShapes) {
  const int n = 2, h = 5, w = 7, c = 3;  // odd sizes: floor, as nn.AvgPool2d(2)
  const auto in = random_vector(size_t(n) * h * w * c, 31);
  std::vector<float> out(size_t(n) * (h / 2) * (w / 2) * c);
  clip::nn::avgpool_forward(out.data(), in.data(), n, h, w, c, 2);
  for (int b = 0; b < n; ++b)
    for (int y = 0; y < h / 2; ++y)
      for (int x = 0; x < w / 2; ++x)
        for (int ch = 0; ch < c; ++ch) {
          auto at = [&](int yy, int xx) { return in[((size_t(b) * h + yy) * w + xx) * c + ch]; };
          const float want = (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)) / 4;
          // Summed in this order and divided, as torch: exact.
          ASSERT_EQ(out[((size_t(b) * (h / 2) + y) * (w / 2) + x) * c + ch], want);
        }
  const std::vector<float> wt(27, 1.0f);
  EXPECT_THROW(clip::conv::make_conv_weights({3, 0, 3, 1, 1}, wt.data()), clip::Error);
  const auto cw = clip::conv::make_conv_weights({3, 1, 3, 1, 0}, wt.data());
  EXPECT_THROW(clip::conv::conv2d_nhwc(cw, in.data(), 1, 2, 2, out.data(), false), clip::Error);
}

// ---- full-size RN50, generated at test time --------------------------------------------

TEST(ResNetVisualFullSizeSlow, RN50MatchesPyTorchReference) {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/resnet-golden";
  const std::string weights = dir + "/rn50.safetensors", golden_path = dir + "/rn50_golden.safetensors";
  const std::string script = std::string(CLIP_SOURCE_DIR) + "/tools/reference_resnet.py";
  // Regenerated when missing or older than the script that makes them.
  if (!fs::exists(weights) || !fs::exists(golden_path) ||
      fs::last_write_time(golden_path) < fs::last_write_time(script)) {
    const std::string cmd = std::string(CLIP_PYTHON) + " " + script + " --preset rn50 --text-width 64 --out " + dir;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  const LoadedCheckpoint ck = read_safetensors(weights);
  const LoadedCheckpoint golden = read_safetensors(golden_path);
  ResNetVisual enc(ck);
  EXPECT_EQ(enc.config().resnet_layers, (std::vector<int>{3, 4, 6, 3}));
  EXPECT_EQ(enc.config().width, 64);
  EXPECT_EQ(enc.config().image_size, 224);
  EXPECT_EQ(enc.config().heads, 32);
  EXPECT_EQ(enc.embed_dim(), 1024);
  for_each_backend([&] { check_against_golden(ck, golden, 1e-4); });

  // The same file through the project's loader (its shape inference fills the config; the
  // file carries a tiny text tower so it is a whole CLIP state dict) gives the same encoder.
  const LoadedCheckpoint loaded = clip::load_checkpoint(weights);
  ASSERT_TRUE(loaded.config.vision.is_resnet());
  EXPECT_EQ(loaded.config.vision.resnet_layers, (std::vector<int>{3, 4, 6, 3}));
  ResNetVisual from_loader(loaded);
  EXPECT_EQ(from_loader.config().heads, 32);
  EXPECT_EQ(from_loader.config().image_size, 224);
  const Tensor& pixels = golden.tensors.at("pixels");
  std::vector<float> a(size_t(enc.embed_dim())), b(a.size());
  enc.encode(pixels.f32(), 1, a.data());
  from_loader.encode(pixels.f32(), 1, b.data());
  EXPECT_EQ(a, b);
}

}  // namespace
