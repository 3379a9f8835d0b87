#include "eval/features.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"

namespace clip::eval {

namespace fs = std::filesystem;

std::string file_identity(const std::string& path) {
  std::error_code ec;
  const auto abs = fs::absolute(path, ec).lexically_normal().string();
  const auto size = fs::is_regular_file(path, ec) ? fs::file_size(path, ec) : 0;
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  return abs + "|" + std::to_string(size) + "|" + std::to_string(mtime);
}

std::string feature_cache_key(const std::string& model_key, const Dataset& data, const clip::PreprocessConfig& cfg,
                              int dim) {
  std::string s = model_key + "|" + std::to_string(dim) + "|" + std::to_string(cfg.image_size) + "|" +
                  std::to_string(int(cfg.interpolation)) + "|" + std::to_string(int(cfg.resize_mode)) + "|" +
                  std::to_string(cfg.fill);
  for (int c = 0; c < 3; ++c) {
    char b[64];
    std::snprintf(b, sizeof b, "|%.9g|%.9g", cfg.mean[size_t(c)], cfg.std[size_t(c)]);
    s += b;
  }
  const uint64_t h = fnv1a64(s, data.fingerprint());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::vector<float> image_features(const Dataset& data, const clip::PreprocessConfig& cfg, int dim,
                                  const ImageEncoder& encode, const FeatureOptions& options) {
  const int64_t n = int64_t(data.size());
  if (n == 0) throw Error(data.source + ": no samples to encode");
  std::string cache_path;
  if (!options.cache_dir.empty()) {
    cache_path = (fs::path(options.cache_dir) /
                  ("features-" + feature_cache_key(options.model_key, data, cfg, dim) + ".npy")).string();
    if (fs::exists(cache_path)) {
      std::vector<int64_t> shape;
      auto cached = read_npy_f32(cache_path, shape);
      if (shape.size() == 2 && shape[0] == n && shape[1] == dim) return cached;
      // A mismatched file (should not happen with the key) is recomputed and replaced.
    }
  }
  const int S = cfg.image_size;
  const int B = std::max(1, options.batch_size);
  const size_t per_image = size_t(3) * S * S;
  std::vector<float> pixels(per_image * size_t(B));
  std::vector<float> out(size_t(n) * dim);
  Progress progress("encoding " + data.name, n, "images");
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    const int nb = int(std::min<int64_t>(B, n - b0));
    const auto t0 = std::chrono::steady_clock::now();
    std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < nb; ++i) {
      try {
        const clip::Image img = data.load_image(size_t(b0 + i));
        clip::preprocess_image(img, cfg, pixels.data() + per_image * size_t(i));
      } catch (...) {
#pragma omp critical
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    const auto t1 = std::chrono::steady_clock::now();
    encode(pixels.data(), nb, out.data() + size_t(b0) * dim);
    if (options.timing) {
      const auto t2 = std::chrono::steady_clock::now();
      options.timing->images += nb;
      options.timing->pipeline_s += std::chrono::duration<double>(t1 - t0).count();
      options.timing->encoder_s += std::chrono::duration<double>(t2 - t1).count();
    }
    if (options.progress) progress.add(nb);
  }
  progress.finish();
  if (!cache_path.empty()) {
    std::error_code ec;
    fs::create_directories(options.cache_dir, ec);
    if (ec) throw Error(options.cache_dir + ": cannot create the feature cache folder: " + ec.message());
    write_npy_f32(cache_path, out.data(), {n, int64_t(dim)});
  }
  return out;
}

}  // namespace clip::eval
