// The public library API (include/clip/clip.h) against the pieces it is built from: the
// tokenizer, the image pipeline and ClipModel. A tiny ViT CLIP with OpenAI's full vocabulary is
// written by the PyTorch reference script into the build directory, in two naming schemes.
#include <gtest/gtest.h>

#include <clip/clip.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/io.h"
#include "core/ops.h"
#include "test_support.h"
#include "model/clip_model.h"
#include "model/weights.h"
#include "text/tokenizer.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace fs = std::filesystem;

namespace {

const std::string kVocab = std::string(CLIP_SHARED_DATA) + "/clip_vocab/bpe_simple_vocab_16e6.txt.gz";
const std::string kPhotos = std::string(CLIP_SHARED_DATA) + "/sample_photos";

std::string model_root() {
  static std::string root = [] {
    std::string dir = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_api_model";
    std::string cmd = std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                      "/tools/reference_model.py write --config tiny-vocab --schemes openai,hf --out " + dir;
    // hf is written last, so its presence means the whole model was written.
    return clip::test::generate_once(dir + "/hf/model.safetensors", cmd) ? dir : std::string();
  }();
  return root;
}

std::string photo(const std::string& rel) { return kPhotos + "/" + rel; }

clip::Model load(const std::string& scheme) {
  clip::ModelOptions o;
  o.vocab_path = kVocab;
  return clip::Model::load(model_root() + "/" + scheme, o);
}

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kVocab)) GTEST_FAIL() << "shared data not found at " << CLIP_SHARED_DATA;
    ASSERT_FALSE(model_root().empty()) << "reference_model.py failed";
  }
};

double dot(std::span<const float> a, std::span<const float> b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

TEST_F(ApiTest, DescribesTheModel) {
  clip::Model m = load("hf");
  EXPECT_EQ(m.embed_dim(), 64);
  EXPECT_EQ(m.image_size(), 32);
  EXPECT_EQ(m.context_length(), 77);
  EXPECT_GT(m.logit_scale(), 1.0f);
  EXPECT_NE(m.describe().find("ViT 2x128 patch 8"), std::string::npos) << m.describe();
}

TEST_F(ApiTest, TextsGoThroughTheTokenizerAndTheEncoder) {
  clip::Model m = load("hf");
  std::vector<std::string> texts = {"a photo of a cat.", "Hello World!", "a diagram"};
  clip::Embeddings e = m.encode_texts(texts, /*batch_size=*/2);  // two batches: 2 + 1
  ASSERT_EQ(e.rows, 3);
  ASSERT_EQ(e.cols, 64);
  // Independently: the tokenizer, then ClipModel, then normalization.
  clip::Tokenizer tok = clip::Tokenizer::from_openai_bpe(kVocab);
  std::vector<int32_t> ids = tok.tokenize(texts, 77, false);
  EXPECT_EQ(ids, m.tokenize(texts));
  clip::ClipModel ref(clip::load_checkpoint(model_root() + "/openai"));
  std::vector<float> f(3 * 64);
  ref.encode_texts(ids.data(), 3, 77, f.data());
  clip::l2_normalize_rows(f.data(), 3, 64);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(e.data[i], f[i], 1e-6) << i;
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(dot(e.row(r), e.row(r)), 1.0, 1e-5);
  clip::Embeddings by_ids = m.encode_token_ids(ids, 3, 77);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(by_ids.data[i], e.data[i], 1e-6);
}

TEST_F(ApiTest, ImagesGoThroughTheExactPipeline) {
  clip::Model m = load("openai");
  std::vector<std::string> paths = {photo("skimage/chelsea.png"), photo("skimage/camera.png"),
                                    photo("matplotlib/grace_hopper.jpg")};
  for (auto& p : paths)
    if (!fs::exists(p)) GTEST_FAIL() << p << " missing";
  clip::Embeddings e = m.encode_image_files(paths, /*batch_size=*/2);
  ASSERT_EQ(e.rows, 3);
  clip::ClipModel ref(clip::load_checkpoint(model_root() + "/openai"));
  clip::PreprocessConfig pc;
  pc.image_size = 32;
  std::vector<float> px(3 * 32 * 32 * 3), f(3 * 64);
  for (int i = 0; i < 3; ++i) clip::preprocess_image(clip::decode_image_file(paths[i]), pc, px.data() + i * 3 * 32 * 32);
  ref.encode_images(px.data(), 3, f.data());
  clip::l2_normalize_rows(f.data(), 3, 64);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(e.data[i], f[i], 1e-6) << i;

  // An RGB buffer with the same pixels as the decoded (RGB) JPEG gives the same embedding.
  clip::Image img = clip::decode_image_file(paths[2]);
  ASSERT_EQ(img.channels, 3);
  clip::Embeddings rgb = m.encode_image_rgb(img.pixels.data(), img.width, img.height);
  for (int j = 0; j < 64; ++j) EXPECT_NEAR(rgb.data[j], e.data[2 * 64 + j], 1e-6);
}

// One Model used by several threads at once (the Python module releases the GIL, the C API
// promises it): every call gets the embeddings of the same call made alone, for
// images and texts interleaved.
TEST_F(ApiTest, ConcurrentCallsOnOneModelGiveTheSameEmbeddings) {
  const clip::Model m = load("openai");
  const std::vector<std::string> paths = {photo("skimage/chelsea.png"), photo("skimage/camera.png"),
                                          photo("matplotlib/grace_hopper.jpg")};
  const std::vector<std::string> texts = {"a photo of a cat", "a diagram", "an old photo of a woman in uniform",
                                          "a camera on a tripod", "the sea"};
  const clip::Embeddings images_alone = m.encode_image_files(paths, 2);
  const clip::Embeddings texts_alone = m.encode_texts(texts, 3);
  // Shared buffers used by two calls at once would mix rows of different inputs: differences
  // of order 0.1, far above the 1e-6 that thread scheduling inside one call may leave.
  auto differs = [](const clip::Embeddings& a, const clip::Embeddings& b) {
    if (a.data.size() != b.data.size()) return true;
    for (size_t i = 0; i < a.data.size(); ++i)
      if (std::fabs(a.data[i] - b.data[i]) > 1e-6f) return true;
    return false;
  };
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 8; ++round) {
        if ((t + round) % 2 == 0) {
          if (differs(m.encode_image_files(paths, 2), images_alone)) ++mismatches[size_t(t)];
        } else {
          if (differs(m.encode_texts(texts, 3), texts_alone)) ++mismatches[size_t(t)];
        }
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[size_t(t)], 0) << "thread " << t;
}

TEST_F(ApiTest, NamingSchemesGiveTheSameEmbeddings) {
  clip::Model a = load("hf"), b = load("openai");
  clip::Embeddings ta = a.encode_texts({"a photo of a dog"}), tb = b.encode_texts({"a photo of a dog"});
  EXPECT_EQ(ta.data, tb.data);
  clip::Embeddings ia = a.encode_image_files({photo("skimage/coffee.png")});
  clip::Embeddings ib = b.encode_image_files({photo("skimage/coffee.png")});
  EXPECT_EQ(ia.data, ib.data);
}

TEST_F(ApiTest, ZeroShotIsTheSoftmaxOfScaledCosinesOfEnsembledPrompts) {
  clip::Model m = load("hf");
  std::vector<std::string> labels = {"cat", "dog", "rocket"};
  std::vector<std::string> templates = {"a photo of a {}.", "a blurry photo of the {}."};
  clip::Embeddings classes = m.class_embeddings(labels, templates);
  // Independently: mean of normalized template embeddings, renormalized.
  for (size_t c = 0; c < labels.size(); ++c) {
    clip::Embeddings t = m.encode_texts({"a photo of a " + labels[c] + ".", "a blurry photo of the " + labels[c] + "."});
    std::vector<double> mean(64);
    double n2 = 0;
    for (int j = 0; j < 64; ++j) {
      mean[j] = (double(t.data[j]) + t.data[64 + j]) / 2;
      n2 += mean[j] * mean[j];
    }
    for (int j = 0; j < 64; ++j) EXPECT_NEAR(classes.data[c * 64 + j], mean[j] / std::sqrt(n2), 1e-5);
  }
  clip::Embeddings img = m.encode_image_files({photo("skimage/chelsea.png")});
  auto preds = m.zeroshot(img.row(0), classes, labels);
  ASSERT_EQ(preds.size(), 3u);
  std::vector<double> logits(3);
  double mx = -1e30, sum = 0;
  for (int c = 0; c < 3; ++c) mx = std::max(mx, logits[c] = m.logit_scale() * dot(img.row(0), classes.row(c)));
  for (int c = 0; c < 3; ++c) sum += std::exp(logits[c] - mx);
  double total = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    const auto& p = preds[i];
    EXPECT_EQ(p.label, labels[p.index]);
    EXPECT_NEAR(p.probability, std::exp(logits[p.index] - mx) / sum, 1e-5);
    if (i) {
      EXPECT_GE(preds[i - 1].probability, p.probability);
    }
    total += p.probability;
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_EQ(m.zeroshot(img.row(0), classes, labels, 1).size(), 1u);
}

TEST_F(ApiTest, CosineMatrixOfNormalizedRows) {
  clip::Model m = load("hf");
  clip::Embeddings a = m.encode_texts({"a", "b c"}), b = m.encode_texts({"d", "e", "f"});
  clip::Embeddings c = clip::cosine_matrix(a, b);
  ASSERT_EQ(c.rows, 2);
  ASSERT_EQ(c.cols, 3);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(c.data[i * 3 + j], dot(a.row(i), b.row(j)), 1e-6);
}

TEST_F(ApiTest, BadInputIsAClearError) {
  clip::Model m = load("hf");
  EXPECT_THROW(m.encode_token_ids({1, 2, 3}, 2, 77), clip::Error);
  std::vector<int32_t> ids(77, 0);
  ids[0] = 49406;
  ids[1] = 60000;  // outside the vocabulary
  EXPECT_THROW(m.encode_token_ids(ids, 1, 77), clip::Error);
  try {
    m.encode_image_files({"/nonexistent/cat.jpg"});
    FAIL() << "no error for a missing image";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cat.jpg"), std::string::npos) << e.what();
  }
  try {
    clip::Model::load(model_root() + "/does-not-exist");
    FAIL() << "no error for a missing model";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does-not-exist"), std::string::npos) << e.what();
  }
  // A vocabulary larger than the model's token embedding is refused at load.
  clip::ModelOptions o;
  o.vocab_path = kVocab;
  try {
    clip::Model::load(std::string(CLIP_SOURCE_DIR) + "/tests/data/model/tiny/openai", o);
    FAIL() << "no error for a vocabulary the model cannot embed";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("49408 tokens"), std::string::npos) << e.what();
  }
  // A checkpoint without tokenizer files and OpenAI's vocabulary size gets OpenAI's vocabulary,
  // installed with the program (found beside the executable, not in the current directory).
  clip::Model bare = clip::Model::load(model_root() + "/hf");
  EXPECT_EQ(bare.encode_image_files({photo("skimage/coffee.png")}).rows, 1);
  clip::Model named = clip::Model::load(model_root() + "/hf", o);
  EXPECT_EQ(bare.encode_texts({"a dog"}).data, named.encode_texts({"a dog"}).data);
  // One with another vocabulary size: images work, texts say what is missing.
  clip::Model other = clip::Model::load(std::string(CLIP_SOURCE_DIR) + "/tests/data/model/tiny/openai");
  EXPECT_EQ(other.encode_image_files({photo("skimage/coffee.png")}).rows, 1);
  try {
    other.encode_texts({"a dog"});
    FAIL() << "no error without a vocabulary";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--vocab"), std::string::npos) << e.what();
  }
}

TEST_F(ApiTest, ConvertedPyTorchCheckpointGivesTheSameEmbeddings) {
  // A pickled state dict as open_clip ships it (here in float16, as OpenAI stores weights),
  // made from the OpenAI-named safetensors, converted back by tools/convert_openai_pt.py.
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_api_convert_" + std::to_string(::getpid());
  fs::create_directories(dir);
  const std::string maker = dir + "/make_pt.py";
  clip::write_file_atomic(maker, std::string(R"PY(
import sys
import torch
sys.path.insert(0, sys.argv[3])
from safetensors_io import read_safetensors
src, dst = sys.argv[1], sys.argv[2]
sd = {"module." + k: v.half() for k, v in read_safetensors(src).items()}
torch.save({"state_dict": sd}, dst)
)PY"));
  const std::string py = std::string(CLIP_PYTHON) + " ";
  ASSERT_EQ(std::system((py + maker + " " + model_root() + "/openai/model.safetensors " + dir + "/m.pt " + CLIP_SOURCE_DIR + "/tools").c_str()), 0);
  ASSERT_EQ(std::system((py + CLIP_SOURCE_DIR + "/tools/convert_openai_pt.py " + dir + "/m.pt " + dir +
                         "/m.safetensors > /dev/null").c_str()),
            0);
  clip::ModelOptions o;
  o.vocab_path = kVocab;
  clip::Model converted = clip::Model::load(dir + "/m.safetensors", o);
  // Same tensors rounded to float16: the embeddings agree to f16 weight precision.
  clip::Model original = load("openai");
  clip::Embeddings a = converted.encode_texts({"a photo of a cat"}), b = original.encode_texts({"a photo of a cat"});
  EXPECT_GT(dot(a.row(0), b.row(0)), 0.999);
  clip::Embeddings ia = converted.encode_image_files({photo("skimage/coffee.png")});
  clip::Embeddings ib = original.encode_image_files({photo("skimage/coffee.png")});
  EXPECT_GT(dot(ia.row(0), ib.row(0)), 0.999);
  fs::remove_all(dir);
}

}  // namespace
