#pragma once
// clip: CLIP (Radford et al., 2021) in C++ -- the public library API.
//
//   #include <clip/clip.h>
//   clip::Model model = clip::Model::load("models/cifar10-vit");      // file or model directory
//   auto img = model.encode_image_files({"cat.jpg"});                  // [1, embed_dim], L2-normalized
//   auto txt = model.encode_texts({"a photo of a cat", "a photo of a dog"});
//   auto top = model.zeroshot(img.row(0), {"cat", "dog"});              // softmax over labels
//
// Everything that can fail throws clip::Error (a std::runtime_error) whose message names the
// file or input and the problem.
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "clip/error.h"

namespace clip {


struct ModelOptions {
  std::string vocab_path;   // tokenizer vocabulary (.txt.gz or a folder with vocab.json+merges.txt);
                            // empty: the model directory's own
  std::string config_path;  // model config JSON overriding the directory's / shape inference
  int num_threads = 0;      // 0: all cores
  // Image decoding. The defaults are the reference's (Pillow's) behaviour, bit for bit.
  bool fast_jpeg = false;          // large JPEGs decoded at 1/2..1/8 scale (short side kept >=
                                   // the model's resolution), then the exact resize: faster,
                                   // not bit-exact (docs/images.md)
  bool exif_orient = false;        // apply EXIF orientation (the reference does not)
  int64_t max_pixels = 89478485;   // decompression-bomb guard, as Pillow's; <= 0: no limit
  // How the transformer layers' products run: "fp32" (the reference numbers), "bf16" (bf16
  // weights and inputs, f32 accumulation: about 1.5x faster where the CPU has AVX512-BF16 or
  // AMX) or "int8" (per-channel int8 weights, per-row uint8 inputs, int32 accumulation: about
  // 2.5x faster where it has AVX512-VNNI or AMX); an error where the CPU lacks them; or "int4"
  // (4-bit weights in blocks of 32, ggml's q4_0, with per-row uint8 inputs: about 1/6 of the
  // f32 weights' memory; any CPU, fastest with AVX512-VNNI). LayerNorm, softmax, GELU and
  // attention stay f32. Weights a GGUF file stores as q4_0 or q8_0 run as stored.
  std::string precision = "fp32";
};

// A row-major [rows, cols] float matrix.
struct Embeddings {
  int64_t rows = 0, cols = 0;
  std::vector<float> data;
  // Throws clip::Error for i outside [0, rows).
  std::span<const float> row(int64_t i) const {
    if (i < 0 || i >= rows)
      throw Error("Embeddings::row(" + std::to_string(i) + "): only " + std::to_string(rows) + " rows");
    return {data.data() + i * cols, size_t(cols)};
  }
};

// An input that a batch call skipped instead of failing: its index in the call's list, the
// file (or text) and why.
struct SkippedInput {
  int64_t index = 0;
  std::string source;
  std::string reason;
};

struct Prediction {
  std::string label;
  int index = 0;
  float probability = 0;  // softmax over labels of exp(logit_scale) * cosine
  float cosine = 0;
};

// Thread safety: every const method may be called from several threads at once. Decoding,
// preprocessing and tokenizing run in parallel; the network runs one encode call at a time per
// Model (it keeps one set of inference buffers, so calls take turns on a lock); for parallel
// encoding, load a Model per thread. Each call itself uses num_threads cores.
class Model {
 public:
  // `path`: a .safetensors checkpoint (OpenAI / open_clip / Hugging Face names) or a model
  // directory holding weights, config, tokenizer files and preprocessing config.
  static Model load(const std::string& path, const ModelOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  int embed_dim() const;
  int image_size() const;
  int context_length() const;
  float logit_scale() const;  // exp() of the stored parameter: the multiplier of cosines
  std::string describe() const;  // one-line architecture summary

  // All encoders return L2-normalized rows, in input order.
  // The first file that cannot be read or decoded throws clip::Error naming it.
  Embeddings encode_image_files(const std::vector<std::string>& paths, int batch_size = 32) const;
  // Batch runs that survive bad files: those are skipped (each listed in `skipped`, index into
  // `paths`), the rows returned are the other files', in input order.
  // `sizes` (optional) receives each returned row's image {width, height} as decoded.
  Embeddings encode_image_files(const std::vector<std::string>& paths, int batch_size,
                                std::vector<SkippedInput>& skipped,
                                std::vector<std::array<int, 2>>* sizes = nullptr) const;
  // Encoded image files held in memory (JPEG, PNG, WebP, BMP, GIF bytes), e.g. from a request;
  // `names` name them in `skipped`. Bad ones are skipped as above.
  Embeddings encode_image_data(const std::vector<std::string_view>& images, const std::vector<std::string>& names,
                               int batch_size, std::vector<SkippedInput>& skipped,
                               std::vector<std::array<int, 2>>* sizes = nullptr) const;
  Embeddings encode_image_rgb(const uint8_t* rgb, int width, int height) const;  // interleaved RGB8
  // A text longer than the context throws clip::Error naming it, unless `truncate` (as
  // clip.tokenize(truncate=True): the first context_length tokens, the last one the end token);
  // `truncated` (optional) receives the indices of the texts that were cut.
  Embeddings encode_texts(const std::vector<std::string>& texts, int batch_size = 64, bool truncate = false,
                          std::vector<int64_t>* truncated = nullptr) const;
  Embeddings encode_token_ids(const std::vector<int32_t>& ids, int count, int context_length) const;

  // Tokenizes like clip.tokenize: [count, context_length], start/end tokens, zero padding.
  std::vector<int32_t> tokenize(const std::vector<std::string>& texts, bool truncate = false,
                                std::vector<int64_t>* truncated = nullptr) const;

  // Class embeddings for zero-shot classification: each label formatted with every template
  // ("{}" and "{c}" stand for the label, every occurrence; a template with neither is an
  // error), embeddings normalized, averaged, renormalized (the paper's ensemble).
  Embeddings class_embeddings(const std::vector<std::string>& labels,
                              const std::vector<std::string>& templates = {"a photo of a {}."},
                              bool truncate = false) const;
  // Labels sorted by probability (top_k of them; 0 = all).
  std::vector<Prediction> zeroshot(std::span<const float> image_embedding, const Embeddings& classes,
                                   const std::vector<std::string>& labels, int top_k = 0) const;
  std::vector<Prediction> zeroshot(std::span<const float> image_embedding,
                                   const std::vector<std::string>& labels, int top_k = 0,
                                   const std::vector<std::string>& templates = {"a photo of a {}."}) const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Cosine similarity matrix of two sets of L2-normalized rows: [a.rows, b.rows].
Embeddings cosine_matrix(const Embeddings& a, const Embeddings& b);

// A prompt template applied to a label, by the rule of class_embeddings.
std::string format_prompt(const std::string& templ, const std::string& label);

void set_num_threads(int n);

}  // namespace clip
