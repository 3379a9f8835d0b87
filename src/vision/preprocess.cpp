// CLIP preprocessing with the reference's geometry and arithmetic (see preprocess.h).
#include "vision/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io.h"

namespace clip {
namespace {

// Python's round() for doubles: half to even (the default floating-point rounding mode).
int round_half_even(double v) { return int(std::nearbyint(v)); }

// The canvas value of a pad, per sample, in the image's own mode.
void fill_canvas(Image& canvas, int fill) {
  if (canvas.mode == "I") {
    const int32_t v = fill;
    for (size_t i = 0; i + 4 <= canvas.pixels.size(); i += 4) std::memcpy(&canvas.pixels[i], &v, 4);
  } else if (canvas.mode == "I;16") {
    const uint16_t v = uint16_t(fill);
    for (size_t i = 0; i + 2 <= canvas.pixels.size(); i += 2) std::memcpy(&canvas.pixels[i], &v, 2);
  } else {
    std::fill(canvas.pixels.begin(), canvas.pixels.end(), uint8_t(fill));
  }
}

void paste(Image& canvas, const Image& part, int left, int top) {
  const size_t px = size_t(part.channels) * part.bytes_per_sample();
  for (int y = 0; y < part.height; ++y)
    std::memcpy(canvas.pixels.data() + (size_t(top + y) * canvas.width + left) * px,
                part.pixels.data() + size_t(y) * part.width * px, size_t(part.width) * px);
}

void check_config(const PreprocessConfig& cfg) {
  if (cfg.image_size <= 0 || cfg.image_size > 16384)
    throw Error("preprocess: image_size " + std::to_string(cfg.image_size) + " out of range");
  for (float s : cfg.std)
    if (!(s > 0.f)) throw Error("preprocess: std must be positive");
}

Interpolation interpolation_from_name(const std::string& s, const std::string& name) {
  if (s == "bicubic" || s == "random") return Interpolation::Bicubic;  // "random": bicubic at eval
  if (s == "bilinear") return Interpolation::Bilinear;
  if (s == "nearest") return Interpolation::Nearest;
  throw Error(name + ": unknown interpolation '" + s + "'");
}

int size_from_json(const nlohmann::json& j, const std::string& name, bool* squash = nullptr) {
  if (j.is_number_integer()) return j.get<int>();
  if (j.is_array() && !j.empty()) {
    int h = j[0].get<int>(), w = j.size() > 1 ? j[1].get<int>() : h;
    if (h != w) throw Error(name + ": non-square image sizes are not supported");
    return h;
  }
  if (j.is_object()) {
    if (j.contains("shortest_edge")) return j["shortest_edge"].get<int>();
    if (j.contains("height") && j.contains("width")) {
      int h = j["height"].get<int>(), w = j["width"].get<int>();
      if (h != w) throw Error(name + ": non-square image sizes are not supported");
      if (squash) *squash = true;
      return h;
    }
  }
  throw Error(name + ": cannot read an image size from " + j.dump());
}

std::array<float, 3> triple(const nlohmann::json& j, const std::string& name, const char* what) {
  if (!j.is_array() || (j.size() != 3 && j.size() != 1)) throw Error(name + ": '" + what + "' must have 3 values");
  std::array<float, 3> v;
  for (int i = 0; i < 3; ++i) v[size_t(i)] = j[j.size() == 1 ? 0 : size_t(i)].get<float>();
  return v;
}

}  // namespace

PreprocessConfig parse_preprocess_config(const std::string& text, const std::string& name) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(name + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(name + ": expected a JSON object");
  PreprocessConfig cfg;
  try {
    if (j.contains("model_cfg") || j.contains("preprocess_cfg")) {
      // open_clip: model_cfg.vision_cfg.image_size and preprocess_cfg {size, mean, std,
      // interpolation, resize_mode, fill_color}.
      if (j.contains("model_cfg") && j["model_cfg"].contains("vision_cfg") &&
          j["model_cfg"]["vision_cfg"].contains("image_size"))
        cfg.image_size = size_from_json(j["model_cfg"]["vision_cfg"]["image_size"], name);
      if (j.contains("preprocess_cfg")) {
        const auto& p = j["preprocess_cfg"];
        if (p.contains("size")) cfg.image_size = size_from_json(p["size"], name);
        if (p.contains("mean")) cfg.mean = triple(p["mean"], name, "mean");
        if (p.contains("std")) cfg.std = triple(p["std"], name, "std");
        if (p.contains("interpolation")) cfg.interpolation = interpolation_from_name(p["interpolation"].get<std::string>(), name);
        if (p.contains("resize_mode")) {
          const std::string m = p["resize_mode"].get<std::string>();
          if (m == "shortest") cfg.resize_mode = ResizeMode::ShortestCrop;
          else if (m == "longest") cfg.resize_mode = ResizeMode::LongestPad;
          else if (m == "squash") cfg.resize_mode = ResizeMode::Squash;
          else throw Error(name + ": unknown resize_mode '" + m + "'");
        }
        if (p.contains("fill_color")) cfg.fill = p["fill_color"].get<int>();
      }
    } else {
      // Hugging Face CLIPImageProcessor: size {shortest_edge} or {height, width}, crop_size,
      // image_mean, image_std, resample (PIL codes: 0 nearest, 2 bilinear, 3 bicubic).
      bool squash = false;
      int resize_to = cfg.image_size;
      if (j.contains("size")) resize_to = size_from_json(j["size"], name, &squash);
      const bool do_crop = j.value("do_center_crop", true);
      cfg.image_size = resize_to;
      if (do_crop && j.contains("crop_size")) cfg.image_size = size_from_json(j["crop_size"], name);
      if (squash) cfg.resize_mode = ResizeMode::Squash;
      if (j.contains("image_mean")) cfg.mean = triple(j["image_mean"], name, "image_mean");
      if (j.contains("image_std")) cfg.std = triple(j["image_std"], name, "image_std");
      if (j.contains("resample")) {
        const int r = j["resample"].get<int>();
        if (r == 0) cfg.interpolation = Interpolation::Nearest;
        else if (r == 2) cfg.interpolation = Interpolation::Bilinear;
        else if (r == 3) cfg.interpolation = Interpolation::Bicubic;
        else throw Error(name + ": unsupported resample " + std::to_string(r) + " (0, 2 or 3)");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": bad preprocessing config: " + e.what());
  }
  check_config(cfg);
  return cfg;
}

PreprocessConfig load_preprocess_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* f : {"preprocessor_config.json", "open_clip_config.json"}) {
      const fs::path p = fs::path(path) / f;
      if (fs::exists(p, ec)) return parse_preprocess_config(read_text_file(p.string()), p.string());
    }
    throw Error(path + ": no preprocessor_config.json or open_clip_config.json in this folder");
  }
  return parse_preprocess_config(read_text_file(path), path);
}

ResizePlan plan_resize(int width, int height, const PreprocessConfig& cfg) {
  if (width <= 0 || height <= 0) throw Error("preprocess: zero-size image");
  const int S = cfg.image_size;
  ResizePlan p;
  switch (cfg.resize_mode) {
    case ResizeMode::ShortestCrop: {
      // torchvision Resize(S): short side S, long side int(S * long / short).
      const bool w_short = width <= height;
      const int short_side = w_short ? width : height, long_side = w_short ? height : width;
      const int new_long = int(double(int64_t(S) * long_side) / short_side);
      p.resized_width = w_short ? S : new_long;
      p.resized_height = w_short ? new_long : S;
      break;
    }
    case ResizeMode::LongestPad: {
      // open_clip ResizeKeepRatio(longest=1): ratio = max(h/S, w/S), sizes round(x / ratio).
      const double rh = double(height) / S, rw = double(width) / S;
      const double ratio = std::max(rh, rw) * 1.0 + std::min(rh, rw) * 0.0;
      p.resized_height = std::max(1, round_half_even(height / ratio));
      p.resized_width = std::max(1, round_half_even(width / ratio));
      break;
    }
    case ResizeMode::Squash:
      p.resized_width = p.resized_height = S;
      break;
  }
  // Crop (or pad) to S x S. torchvision's CenterCrop rounds the offset half to even; open_clip's
  // CenterCropOrPad (used with "longest") truncates. Padding puts the odd pixel on the right.
  auto axis = [&](int len, int& crop_off, int& crop_len, int& pad) {
    if (len < S) {
      crop_off = 0;
      crop_len = len;
      pad = (S - len) / 2;
    } else {
      crop_len = S;
      pad = 0;
      crop_off = cfg.resize_mode == ResizeMode::LongestPad ? int((len - S) / 2.0) : round_half_even((len - S) / 2.0);
    }
  };
  axis(p.resized_width, p.crop.x, p.crop.width, p.pad_left);
  axis(p.resized_height, p.crop.y, p.crop.height, p.pad_top);
  return p;
}

Image preprocess_to_rgb8(const Image& img, const PreprocessConfig& cfg) {
  check_config(cfg);
  if (img.empty()) throw Error("preprocess: empty image");
  const ResizePlan p = plan_resize(img.width, img.height, cfg);
  Image part = resize_image_window(img, p.resized_width, p.resized_height, cfg.interpolation, p.crop);
  const int S = cfg.image_size;
  if (part.width != S || part.height != S) {
    Image canvas;
    canvas.width = canvas.height = S;
    canvas.channels = part.channels;
    canvas.mode = part.mode;
    canvas.palette = part.palette;
    if (part.mode == "PA") {
      // torchvision pads through Image.new, which keeps a palette only for "P" (grey ramp here).
      canvas.palette.assign(768, 0);
      for (int i = 0; i < 768; ++i) canvas.palette[size_t(i)] = uint8_t(i / 3);
    }
    canvas.pixels.resize(size_t(S) * S * part.channels * part.bytes_per_sample());
    fill_canvas(canvas, cfg.fill);
    paste(canvas, part, p.pad_left, p.pad_top);
    part = std::move(canvas);
  }
  if (part.mode == "RGB") return part;
  return convert_to_rgb(part);
}

void normalize_rgb8(const Image& rgb, const PreprocessConfig& cfg, float* out) {
  if (rgb.mode != "RGB" || rgb.channels != 3) throw Error("normalize_rgb8: expects an RGB image");
  // ToTensor (v / 255 in float32) then Normalize ((x - mean) / std in float32), tabulated: the
  // same float operations on the same inputs, so the same results.
  float lut[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      volatile float x = float(v) / 255.0f;
      lut[c][v] = (x - cfg.mean[size_t(c)]) / cfg.std[size_t(c)];
    }
  const size_t n = size_t(rgb.width) * rgb.height;
  const uint8_t* in = rgb.pixels.data();
  float* r = out;
  float* g = out + n;
  float* b = out + 2 * n;
  for (size_t i = 0; i < n; ++i) {
    r[i] = lut[0][in[i * 3]];
    g[i] = lut[1][in[i * 3 + 1]];
    b[i] = lut[2][in[i * 3 + 2]];
  }
}

void preprocess_image(const Image& img, const PreprocessConfig& cfg, float* out_chw) {
  normalize_rgb8(preprocess_to_rgb8(img, cfg), cfg, out_chw);
}

void preprocess_rgb(const uint8_t* rgb, int width, int height, const PreprocessConfig& cfg, float* out_chw) {
  preprocess_image(image_from_buffer(rgb, width, height, "RGB"), cfg, out_chw);
}

Image crop_image(const Image& img, int left, int top, int width, int height) {
  if (width <= 0 || height <= 0) throw Error("crop: empty crop");
  Image out;
  out.width = width;
  out.height = height;
  out.channels = img.channels;
  out.mode = img.mode;
  out.palette = img.palette;
  const size_t px = size_t(img.channels) * img.bytes_per_sample();
  out.pixels.assign(size_t(width) * height * px, 0);
  for (int y = 0; y < height; ++y) {
    const int sy = top + y;
    if (sy < 0 || sy >= img.height) continue;
    const int x0 = std::max(0, -left), x1 = std::min(width, img.width - left);
    if (x1 <= x0) continue;
    std::memcpy(out.pixels.data() + (size_t(y) * width + x0) * px,
                img.pixels.data() + (size_t(sy) * img.width + left + x0) * px, size_t(x1 - x0) * px);
  }
  return out;
}

Image center_crop(const Image& img, int size) {
  const int top = round_half_even((img.height - size) / 2.0);
  const int left = round_half_even((img.width - size) / 2.0);
  return crop_image(img, left, top, size, size);
}

RandomResizedCropParams random_resized_crop_params(int width, int height, std::mt19937_64& rng,
                                                   std::array<double, 2> scale,
                                                   std::array<double, 2> ratio) {
  if (width <= 0 || height <= 0) throw Error("random_resized_crop: zero-size image");
  if (!(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1.0))
    throw Error("random_resized_crop: scale range must satisfy 0 < min <= max <= 1");
  // torchvision RandomResizedCrop.get_params, with std::uniform_real_distribution draws.
  const double area = double(width) * height;
  const double log_r0 = std::log(ratio[0]), log_r1 = std::log(ratio[1]);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * (scale[0] + (scale[1] - scale[0]) * unit(rng));
    const double aspect = std::exp(log_r0 + (log_r1 - log_r0) * unit(rng));
    const int w = round_half_even(std::sqrt(target_area * aspect));
    const int h = round_half_even(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      RandomResizedCropParams p;
      p.top = std::uniform_int_distribution<int>(0, height - h)(rng);
      p.left = std::uniform_int_distribution<int>(0, width - w)(rng);
      p.height = h;
      p.width = w;
      return p;
    }
  }
  // Fallback: central crop at the nearest allowed aspect ratio.
  const double in_ratio = double(width) / height;
  RandomResizedCropParams p;
  if (in_ratio < ratio[0]) {
    p.width = width;
    p.height = std::max(1, round_half_even(width / ratio[0]));
  } else if (in_ratio > ratio[1]) {
    p.height = height;
    p.width = std::max(1, round_half_even(height * ratio[1]));
  } else {
    p.width = width;
    p.height = height;
  }
  p.top = (height - p.height) / 2;
  p.left = (width - p.width) / 2;
  return p;
}

void resized_crop_image(const Image& img, const RandomResizedCropParams& p, const PreprocessConfig& cfg,
                        float* out_chw) {
  check_config(cfg);
  const Image part = crop_image(img, p.left, p.top, p.width, p.height);
  const int S = cfg.image_size;
  Image resized = resize_image(part, S, S, cfg.interpolation);
  normalize_rgb8(resized.mode == "RGB" ? resized : convert_to_rgb(resized), cfg, out_chw);
}

void random_resized_crop(const Image& img, const PreprocessConfig& cfg, std::mt19937_64& rng,
                         float* out_chw, std::array<double, 2> scale) {
  resized_crop_image(img, random_resized_crop_params(img.width, img.height, rng, scale), cfg, out_chw);
}

}  // namespace clip
