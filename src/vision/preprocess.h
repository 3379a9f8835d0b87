#pragma once
// CLIP's image preprocessing, bit-exact with the reference (openai/CLIP `_transform`, open_clip
// `image_transform`): Resize (Pillow, in the decoded mode) -> CenterCrop -> convert("RGB") ->
// ToTensor -> Normalize. Resize and crop are fused: only the cropped pixels are computed,
// which gives the same values (see resize.h).
#include <array>
#include <cstdint>
#include <random>
#include <string>

#include "image.h"  // relative: also installed under include/clip/vision/
#include "resize.h"

namespace clip {

enum class ResizeMode {
  ShortestCrop,  // shorter side to image_size (long side truncated), centre crop (openai/CLIP)
  LongestPad,    // longer side to image_size (rounded), centre pad with `fill` (open_clip "longest")
  Squash,        // both sides to image_size, aspect ratio not kept (open_clip "squash")
};

struct PreprocessConfig {
  int image_size = 224;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
  Interpolation interpolation = Interpolation::Bicubic;
  ResizeMode resize_mode = ResizeMode::ShortestCrop;
  int fill = 0;  // pad value (every channel; a palette index for "P") for LongestPad
};

// Reads a Hugging Face preprocessor_config.json, an open_clip_config.json (model_cfg.vision_cfg
// .image_size + preprocess_cfg), or a directory holding either (HF file first). Fields that are
// absent keep the defaults above. Throws clip::Error if nothing readable is found.
PreprocessConfig load_preprocess_config(const std::string& model_dir_or_json);
// The same from JSON text (`name` is used in error messages).
PreprocessConfig parse_preprocess_config(const std::string& json_text, const std::string& name);

// Geometry of the reference's Resize + CenterCrop (or pad) for an image of width x height.
struct ResizePlan {
  int resized_width = 0, resized_height = 0;  // Resize target
  PixelRect crop;                             // part of the resized image kept (its size <= S)
  int pad_left = 0, pad_top = 0;              // where the kept part lands in the S x S output
};
ResizePlan plan_resize(int width, int height, const PreprocessConfig& cfg);

// Decoded image -> [3, S, S] float32 CHW, normalised. out_chw holds 3*S*S floats.
void preprocess_image(const Image& img, const PreprocessConfig& cfg, float* out_chw);
// From an interleaved 8-bit RGB buffer (treated as a Pillow "RGB" image).
void preprocess_rgb(const uint8_t* rgb, int width, int height, const PreprocessConfig& cfg, float* out_chw);

// The 8-bit RGB S x S image that preprocess_image normalises (for parity tests and debugging).
Image preprocess_to_rgb8(const Image& img, const PreprocessConfig& cfg);
// ToTensor + Normalize of an RGB8 image (S x S) into CHW floats: ((v / 255) - mean) / std in
// float32, the reference's exact operations (tabulated).
void normalize_rgb8(const Image& rgb, const PreprocessConfig& cfg, float* out_chw);

// Pillow-style crop (pixels outside the image are 0, as Pillow's crop gives).
Image crop_image(const Image& img, int left, int top, int width, int height);
// Centre crop with the reference's offsets (torchvision CenterCrop: int(round((h - S) / 2.0))).
Image center_crop(const Image& img, int size);

// CLIP's training augmentation: torchvision RandomResizedCrop(S, scale, ratio=(3/4, 4/3),
// bicubic) with our own seeded generator (reproducible for a given seed, not torch's stream).
struct RandomResizedCropParams {
  int top = 0, left = 0, height = 0, width = 0;
};
RandomResizedCropParams random_resized_crop_params(int width, int height, std::mt19937_64& rng,
                                                   std::array<double, 2> scale = {0.08, 1.0},
                                                   std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0});
// Crop (in the decoded mode), resize to S x S with cfg.interpolation, convert, normalise.
void resized_crop_image(const Image& img, const RandomResizedCropParams& p, const PreprocessConfig& cfg,
                        float* out_chw);
void random_resized_crop(const Image& img, const PreprocessConfig& cfg, std::mt19937_64& rng,
                         float* out_chw, std::array<double, 2> scale = {0.08, 1.0});

}  // namespace clip
