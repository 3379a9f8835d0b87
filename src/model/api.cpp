// The public API (include/clip/clip.h): a thin layer over the checkpoint loader, ClipModel,
// the tokenizer and the image pipeline, so that a program embeds CLIP in a few lines.
#include "clip/clip.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <numeric>

#include "core/ops.h"
#include "model/loaded_model.h"
#include "core/threads.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "text/prompt.h"
#include "text/tokenizer.h"
#include "text/vocabulary.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace clip {

struct Model::Impl {
  std::unique_ptr<ClipModel> model;
  std::shared_ptr<Tokenizer> tokenizer;  // null when the model carries no vocabulary
  std::string tokenizer_error;           // why there is none (reported on first text use)
  PreprocessConfig preprocess;
  DecodeOptions decode;
  std::string path;

  const Tokenizer& tok() const {
    if (!tokenizer) throw Error(tokenizer_error);
    return *tokenizer;
  }

  // The network runs every encode call in one set of inference buffers that it keeps (no
  // allocation per call): calls on one Model from several threads take turns here instead of
  // sharing them. Decoding, preprocessing and tokenizing stay outside the lock.
  void encode_images(const float* pixels, int batch, float* out) const {
    std::lock_guard<std::mutex> lock(encode_mutex);
    model->encode_images(pixels, batch, out);
  }
  void encode_texts(const int32_t* ids, int batch, int context, float* out) const {
    std::lock_guard<std::mutex> lock(encode_mutex);
    model->encode_texts(ids, batch, context, out);
  }
  mutable std::mutex encode_mutex;
};

namespace {
namespace fs = std::filesystem;

void normalize_rows(Embeddings& e) { l2_normalize_rows(e.data.data(), e.rows, e.cols); }

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

namespace {
// The tokenizer: the one named, else the model directory's own, else (for a model with OpenAI's
// vocabulary size, as every OpenAI / open_clip checkpoint has) the OpenAI vocabulary installed
// with the program. Without one, text calls fail with `why_not`.
std::shared_ptr<Tokenizer> model_tokenizer(const std::string& vocab, const std::string& model_dir,
                                                int model_vocab_size, std::string& why_not) {
  if (!vocab.empty()) return std::make_shared<Tokenizer>(load_tokenizer(vocab));
  if (!model_dir.empty()) {
    try {
      return std::make_shared<Tokenizer>(Tokenizer::from_directory(model_dir));
    } catch (const Error& e) {
      why_not = std::string(e.what()) + " (give the vocabulary with --vocab / ModelOptions::vocab_path)";
    }
  }
  constexpr int kOpenAIVocabSize = 49408;
  if (model_vocab_size == kOpenAIVocabSize) {
    const std::string def = default_vocabulary_path();
    if (!def.empty()) return std::make_shared<Tokenizer>(load_tokenizer(def));
    why_not = no_vocabulary_message();
    return nullptr;
  }
  if (why_not.empty())
    why_not = "the checkpoint carries no tokenizer files and its vocabulary (" + std::to_string(model_vocab_size) +
              " tokens) is not OpenAI's: give it with --vocab / ModelOptions::vocab_path";
  return nullptr;
}
}  // namespace

LoadedModel load_model(const std::string& path, const std::string& vocab_path, const std::string& config_path,
                       Precision precision) {
  LoadedModel m;
  LoadOptions load_options;
  load_options.config_path = config_path;
  load_options.blocks_without_f32 = true;  // only ClipModel reads it: the blocks run as stored
  LoadedCheckpoint ckpt = load_checkpoint(path, load_options);
  const std::string model_dir = ckpt.model_dir;
  m.preprocess = PreprocessConfig{};
  m.preprocess.image_size = ckpt.config.vision.image_size;
  if (!model_dir.empty()) {
    try {
      m.preprocess = load_preprocess_config(model_dir);
    } catch (const Error&) {
      // No preprocessing config in the directory: CLIP's defaults at the model's resolution.
    }
    if (m.preprocess.image_size != ckpt.config.vision.image_size)
      throw Error(path + ": preprocessing config says image size " + std::to_string(m.preprocess.image_size) +
                  " but the model expects " + std::to_string(ckpt.config.vision.image_size));
  }
  m.tokenizer = model_tokenizer(vocab_path, model_dir, ckpt.config.text.vocab_size, m.tokenizer_error);
  if (m.tokenizer && m.tokenizer->vocab_size() > ckpt.config.text.vocab_size)
    throw Error(path + ": the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
                " tokens but the model's token embedding has only " +
                std::to_string(ckpt.config.text.vocab_size) + " rows: wrong vocabulary for this model");
  m.model = std::make_unique<ClipModel>(std::move(ckpt), precision);
  return m;
}

Model Model::load(const std::string& path, const ModelOptions& options) {
  if (options.num_threads > 0) set_num_threads(options.num_threads);
  LoadedModel loaded = load_model(path, options.vocab_path, options.config_path, parse_precision(options.precision));
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->model = std::move(loaded.model);
  impl->tokenizer = std::move(loaded.tokenizer);
  impl->tokenizer_error = std::move(loaded.tokenizer_error);
  impl->preprocess = loaded.preprocess;
  impl->decode.exif_orient = options.exif_orient;
  impl->decode.max_pixels = options.max_pixels;
  impl->decode.jpeg_draft_min_side = options.fast_jpeg ? impl->preprocess.image_size : 0;
  return Model(std::move(impl));
}

int Model::embed_dim() const { return impl_->model->config().embed_dim; }
int Model::image_size() const { return impl_->model->config().vision.image_size; }
int Model::context_length() const { return impl_->model->config().text.context_length; }
float Model::logit_scale() const { return std::exp(impl_->model->logit_scale()); }

std::string Model::describe() const {
  const ModelConfig& c = impl_->model->config();
  std::string s;
  if (c.vision.is_resnet()) {
    s = "ResNet(";
    for (size_t i = 0; i < c.vision.resnet_layers.size(); ++i)
      s += (i ? "," : "") + std::to_string(c.vision.resnet_layers[i]);
    s += ") width " + std::to_string(c.vision.width);
  } else {
    s = "ViT " + std::to_string(c.vision.layers) + "x" + std::to_string(c.vision.width) + " patch " +
        std::to_string(c.vision.patch_size);
  }
  s += " @" + std::to_string(c.vision.image_size) + "px; text " + std::to_string(c.text.layers) + "x" +
       std::to_string(c.text.width) + " ctx " + std::to_string(c.text.context_length) + "; embed " +
       std::to_string(c.embed_dim);
  return s;
}

namespace {
// Decodes and preprocesses each batch in parallel, then encodes the batch's good images.
// Without `skipped` the first bad file (in input order) is thrown; with it, bad files are
// listed there and left out of the rows.
// `decode(i)` gives image i (files or bytes in memory); `names[i]` names it in skipped lists.
template <typename Decode>
Embeddings encode_decoded(const Model::Impl& impl, int S, int D, const std::vector<std::string>& paths,
                          int batch_size, std::vector<SkippedInput>* skipped, std::vector<std::array<int, 2>>* sizes,
                          const Decode& decode) {
  const size_t per_image = size_t(3) * S * S;
  batch_size = std::max(1, batch_size);
  Embeddings out;
  out.cols = D;
  out.data.reserve(paths.size() * size_t(D));
  std::vector<float> pixels;
  for (size_t start = 0; start < paths.size(); start += size_t(batch_size)) {
    const size_t n = std::min(paths.size() - start, size_t(batch_size));
    pixels.resize(n * per_image);
    std::vector<std::string> errors(n);
    std::vector<std::array<int, 2>> dims(n);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < n; ++i) {
      try {
        Image img = decode(start + i);
        dims[i] = {img.width, img.height};
        preprocess_image(img, impl.preprocess, pixels.data() + i * per_image);
      } catch (const std::exception& e) {
        errors[i] = e.what();
        if (errors[i].empty()) errors[i] = paths[start + i] + ": cannot be read";
      }
    }
    // Compact the good images to the front of the batch, in order.
    size_t good = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!errors[i].empty()) {
        if (!skipped) throw Error(errors[i]);
        skipped->push_back({int64_t(start + i), paths[start + i], errors[i]});
        continue;
      }
      if (sizes) sizes->push_back(dims[i]);
      if (good != i)
        std::copy(pixels.begin() + long(i * per_image), pixels.begin() + long((i + 1) * per_image),
                  pixels.begin() + long(good * per_image));
      ++good;
    }
    if (good == 0) continue;
    out.data.resize(size_t(out.rows + int64_t(good)) * size_t(D));
    impl.encode_images(pixels.data(), int(good), out.data.data() + size_t(out.rows) * size_t(D));
    out.rows += int64_t(good);
  }
  normalize_rows(out);
  return out;
}

Embeddings encode_files(const Model::Impl& impl, int S, int D, const std::vector<std::string>& paths,
                        int batch_size, std::vector<SkippedInput>* skipped,
                        std::vector<std::array<int, 2>>* sizes = nullptr) {
  return encode_decoded(impl, S, D, paths, batch_size, skipped, sizes,
                        [&](size_t i) { return decode_image_file(paths[i], impl.decode); });
}
}  // namespace

Embeddings Model::encode_image_files(const std::vector<std::string>& paths, int batch_size) const {
  return encode_files(*impl_, image_size(), embed_dim(), paths, batch_size, nullptr);
}

Embeddings Model::encode_image_data(const std::vector<std::string_view>& images, const std::vector<std::string>& names,
                                    int batch_size, std::vector<SkippedInput>& skipped,
                                    std::vector<std::array<int, 2>>* sizes) const {
  if (names.size() != images.size()) throw Error("encode_image_data: images and names differ in count");
  return encode_decoded(*impl_, image_size(), embed_dim(), names, batch_size, &skipped, sizes, [&](size_t i) {
    return decode_image_memory(reinterpret_cast<const uint8_t*>(images[i].data()), images[i].size(), names[i],
                               impl_->decode);
  });
}

Embeddings Model::encode_image_files(const std::vector<std::string>& paths, int batch_size,
                                     std::vector<SkippedInput>& skipped,
                                     std::vector<std::array<int, 2>>* sizes) const {
  return encode_files(*impl_, image_size(), embed_dim(), paths, batch_size, &skipped, sizes);
}

Embeddings Model::encode_image_rgb(const uint8_t* rgb, int width, int height) const {
  const int S = image_size(), D = embed_dim();
  std::vector<float> pixels(size_t(3) * S * S);
  preprocess_rgb(rgb, width, height, impl_->preprocess, pixels.data());
  Embeddings out;
  out.rows = 1;
  out.cols = D;
  out.data.resize(size_t(D));
  impl_->encode_images(pixels.data(), 1, out.data.data());
  normalize_rows(out);
  return out;
}

std::vector<int32_t> Model::tokenize(const std::vector<std::string>& texts, bool truncate,
                                     std::vector<int64_t>* truncated) const {
  return impl_->tok().tokenize(texts, context_length(), truncate, truncated);
}

Embeddings Model::encode_token_ids(const std::vector<int32_t>& ids, int count, int ctx) const {
  if (count < 0 || ctx <= 0 || ids.size() != size_t(count) * size_t(ctx))
    throw Error("encode_token_ids: expected " + std::to_string(count) + " x " + std::to_string(ctx) +
                " ids, got " + std::to_string(ids.size()));
  if (ctx > context_length())
    throw Error("encode_token_ids: context length " + std::to_string(ctx) + " exceeds the model's " +
                std::to_string(context_length()));
  const int V = impl_->model->config().text.vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw Error("encode_token_ids: token id " + std::to_string(ids[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary of " + std::to_string(V));
  Embeddings out;
  out.rows = count;
  out.cols = embed_dim();
  out.data.resize(size_t(count) * size_t(out.cols));
  if (count > 0) impl_->encode_texts(ids.data(), count, ctx, out.data.data());
  normalize_rows(out);
  return out;
}

Embeddings Model::encode_texts(const std::vector<std::string>& texts, int batch_size, bool truncate,
                               std::vector<int64_t>* truncated) const {
  const int ctx = context_length();
  batch_size = std::max(1, batch_size);
  // All texts tokenized first: an error names the text by its index in `texts`.
  const std::vector<int32_t> ids = impl_->tok().tokenize(texts, ctx, truncate, truncated);
  Embeddings out;
  out.rows = int64_t(texts.size());
  out.cols = embed_dim();
  out.data.resize(texts.size() * size_t(out.cols));
  for (size_t start = 0; start < texts.size(); start += size_t(batch_size)) {
    const size_t n = std::min(texts.size() - start, size_t(batch_size));
    impl_->encode_texts(ids.data() + start * size_t(ctx), int(n), ctx, out.data.data() + start * size_t(out.cols));
  }
  normalize_rows(out);
  return out;
}

Embeddings Model::class_embeddings(const std::vector<std::string>& labels,
                                   const std::vector<std::string>& templates, bool truncate) const {
  if (templates.empty()) throw Error("zero-shot: no prompt templates given");
  std::vector<std::string> prompts;
  prompts.reserve(labels.size() * templates.size());
  for (auto& l : labels)
    for (auto& t : templates) prompts.push_back(format_prompt(t, l));
  Embeddings all = encode_texts(prompts, 64, truncate);
  Embeddings out;
  out.rows = int64_t(labels.size());
  out.cols = all.cols;
  out.data.assign(size_t(out.rows * out.cols), 0.f);
  for (int64_t c = 0; c < out.rows; ++c)
    for (size_t t = 0; t < templates.size(); ++t) {
      auto r = all.row(c * int64_t(templates.size()) + int64_t(t));
      for (int64_t j = 0; j < out.cols; ++j) out.data[size_t(c * out.cols + j)] += r[size_t(j)];
    }
  normalize_rows(out);
  return out;
}

std::vector<Prediction> Model::zeroshot(std::span<const float> image, const Embeddings& classes,
                                        const std::vector<std::string>& labels, int top_k) const {
  if (int64_t(labels.size()) != classes.rows) throw Error("zero-shot: labels and class embeddings differ in count");
  if (int64_t(image.size()) != classes.cols) throw Error("zero-shot: embedding sizes differ");
  const float scale = logit_scale();
  std::vector<Prediction> preds(labels.size());
  float max_logit = -INFINITY;
  for (size_t c = 0; c < labels.size(); ++c) {
    auto r = classes.row(int64_t(c));
    float cos = 0;
    for (size_t j = 0; j < image.size(); ++j) cos += image[j] * r[j];
    preds[c] = {labels[c], int(c), 0.f, cos};
    max_logit = std::max(max_logit, scale * cos);
  }
  double sum = 0;
  for (auto& p : preds) sum += std::exp(double(scale * p.cosine - max_logit));
  for (auto& p : preds) p.probability = float(std::exp(double(scale * p.cosine - max_logit)) / sum);
  std::stable_sort(preds.begin(), preds.end(),
                   [](const Prediction& a, const Prediction& b) { return a.probability > b.probability; });
  if (top_k > 0 && size_t(top_k) < preds.size()) preds.resize(size_t(top_k));
  return preds;
}

std::vector<Prediction> Model::zeroshot(std::span<const float> image, const std::vector<std::string>& labels,
                                        int top_k, const std::vector<std::string>& templates) const {
  return zeroshot(image, class_embeddings(labels, templates), labels, top_k);
}

Embeddings cosine_matrix(const Embeddings& a, const Embeddings& b) {
  if (a.cols != b.cols) throw Error("cosine_matrix: embedding sizes differ");
  Embeddings out;
  out.rows = a.rows;
  out.cols = b.rows;
  out.data.assign(size_t(a.rows * b.rows), 0.f);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < b.rows; ++j) {
      float s = 0;
      for (int64_t k = 0; k < a.cols; ++k) s += a.data[size_t(i * a.cols + k)] * b.data[size_t(j * b.cols + k)];
      out.data[size_t(i * b.rows + j)] = s;
    }
  return out;
}

}  // namespace clip
