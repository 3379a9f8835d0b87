#pragma once
// Image features of a whole dataset: images are decoded and preprocessed by OpenMP worker
// threads (through the vision module) into a batch, the batch goes to the encoder callback,
// and the features are cached on disk as .npy keyed by (model, dataset, preprocessing), so a
// second run (another C, another shot count, the report) does not encode again.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "vision/preprocess.h"

namespace clip::eval {
// The dataset readers live in src/data, shared with training.
using data::Dataset;
using data::DatasetOptions;
using data::Sample;
using data::fnv1a64;
using data::open_dataset;
}  // namespace clip::eval

namespace clip::eval {

// pixels: [batch, 3, S, S] normalised; out: [batch, dim] (any scale).
using ImageEncoder = std::function<void(const float* pixels_nchw, int batch, float* out)>;

// Where the time of a feature pass went (wall seconds): reading, decoding and preprocessing
// the images (all threads) versus the image encoder (all threads). The two alternate per batch.
struct FeatureTiming {
  int64_t images = 0;
  double pipeline_s = 0;
  double encoder_s = 0;
};

struct FeatureOptions {
  int batch_size = 64;
  std::string cache_dir;   // "" = no cache
  std::string model_key;   // identifies the model (e.g. weights path + size + mtime)
  bool progress = true;    // progress line on a terminal
  FeatureTiming* timing = nullptr;  // filled when given (not for cached features)
};

// Hex key of the cache file for (model_key, dataset, preprocessing, dim).
std::string feature_cache_key(const std::string& model_key, const Dataset& data, const clip::PreprocessConfig& cfg,
                              int dim);
// model_key for a weights file: its absolute path, size and modification time.
std::string file_identity(const std::string& path);

// [data.size(), dim] features. Decode failures throw clip::Error naming the sample.
std::vector<float> image_features(const Dataset& data, const clip::PreprocessConfig& cfg, int dim,
                                  const ImageEncoder& encode, const FeatureOptions& options);

}  // namespace clip::eval
