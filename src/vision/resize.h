#pragma once
// Resampling that reproduces Pillow 9.4's Image.resize bit for bit (libImaging/Resample.c and
// the affine NEAREST path of _imaging.c), including its handling of modes: RGBA and LA are
// premultiplied around the resize, P and 1 always use NEAREST, I resizes in double precision.
#include <cstdint>

#include "image.h"  // relative: also installed under include/clip/vision/

namespace clip {

enum class Interpolation { Bicubic, Bilinear, Nearest };

// A window of the output image: only these pixels are computed (the rest of a full resize is
// identical, pixel by pixel, whether it is computed or not). Used to fuse resize and crop.
struct PixelRect {
  int x = 0, y = 0, width = 0, height = 0;
};

// Pillow's resize of an 8-bit interleaved image of `channels` (1..4) bands to out_w x out_h,
// writing only the `window` of the result to `dst` (window.width*window.height*channels bytes).
// Bicubic/Bilinear: separable fixed-point convolution, horizontal pass first, rounded and
// clamped to 8 bits between the passes. Nearest: Pillow's affine nearest sampling.
void resize_uint8_window(const uint8_t* src, int width, int height, int channels, int out_w,
                         int out_h, Interpolation interp, const PixelRect& window, uint8_t* dst);
// The whole output (dst holds out_w*out_h*channels bytes).
void resize_uint8(const uint8_t* src, int width, int height, int channels, uint8_t* dst, int out_w,
                  int out_h, Interpolation interp);

// Mode-aware resize, as Pillow's Image.resize(size, resample) (copy when the size is unchanged),
// computing only `window` of the output (the returned image has the window's size).
Image resize_image_window(const Image& img, int out_w, int out_h, Interpolation interp,
                          const PixelRect& window);
Image resize_image(const Image& img, int out_w, int out_h, Interpolation interp);

}  // namespace clip
