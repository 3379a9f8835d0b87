#pragma once
// Public image API of clip: decoding (JPEG, PNG, WebP, BMP, GIF) with Pillow's modes and
// pixels, and CLIP preprocessing bit-exact with the reference (Pillow resize + centre crop +
// convert("RGB") + ToTensor + Normalize). See docs/images.md.
//
//   clip::Image img = clip::decode_image_file("photo.jpg");          // clip::Error on bad input
//   clip::PreprocessConfig cfg = clip::load_preprocess_config(dir);  // or the defaults (224)
//   std::vector<float> chw(3 * cfg.image_size * cfg.image_size);
//   clip::preprocess_image(img, cfg, chw.data());
#include "vision/arrays.h"
#include "vision/image.h"
#include "vision/preprocess.h"
#include "vision/resize.h"
