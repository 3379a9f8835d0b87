// The C API (include/clip/clip_c.h) against the C++ API on the shipped model and real photos:
// the same embeddings, token ids and zero-shot probabilities; every misuse (NULLs, zero counts,
// a missing file, a text too long) is a status with a message, never an exception or a crash;
// messages are per thread.
#include <gtest/gtest.h>

#include <clip/clip.h>
#include <clip/clip_c.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kShip = std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test/ship/0000.jpg";
const std::string kCat = std::string(CLIP_SHARED_DATA) + "/sample_photos/skimage/chelsea.png";

struct Loaded {
  clip_model* m = nullptr;
  Loaded() { EXPECT_EQ(clip_model_load(kModel.c_str(), nullptr, &m), CLIP_OK) << clip_last_error(); }
  ~Loaded() { clip_model_free(m); }
};

TEST(CApi, SameNumbersAsTheCppApi) {
  ASSERT_TRUE(std::filesystem::exists(kShip)) << "shared data not found";
  Loaded c;
  ASSERT_NE(c.m, nullptr);
  const clip::Model cpp = clip::Model::load(kModel);
  const int D = clip_model_embed_dim(c.m);
  EXPECT_EQ(D, cpp.embed_dim());
  EXPECT_EQ(clip_model_context_length(c.m), cpp.context_length());
  EXPECT_EQ(clip_model_image_size(c.m), cpp.image_size());
  EXPECT_EQ(clip_model_logit_scale(c.m), cpp.logit_scale());

  const char* paths[] = {kShip.c_str(), kCat.c_str()};
  std::vector<float> img(size_t(2 * D));
  ASSERT_EQ(clip_encode_image_files(c.m, paths, 2, img.data()), CLIP_OK) << clip_last_error();
  EXPECT_EQ(img, cpp.encode_image_files({kShip, kCat}).data);

  const char* texts[] = {"a photo of a ship", "a photo of a cat"};
  std::vector<float> txt(size_t(2 * D));
  ASSERT_EQ(clip_encode_texts(c.m, texts, 2, 0, txt.data()), CLIP_OK) << clip_last_error();
  EXPECT_EQ(txt, cpp.encode_texts({"a photo of a ship", "a photo of a cat"}).data);

  const int ctx = clip_model_context_length(c.m);
  std::vector<int32_t> ids(size_t(2 * ctx));
  ASSERT_EQ(clip_tokenize(c.m, texts, 2, 0, ids.data()), CLIP_OK);
  EXPECT_EQ(ids, cpp.tokenize({"a photo of a ship", "a photo of a cat"}));

  const unsigned char rgb[4 * 3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9, 200, 100, 50, 1, 2, 3,
                                        7, 7, 7, 100, 100, 100, 30, 60, 90, 0, 0, 0, 255, 255, 255, 5, 50, 5};
  std::vector<float> small(static_cast<size_t>(D));
  ASSERT_EQ(clip_encode_image_rgb(c.m, rgb, 4, 3, small.data()), CLIP_OK);
  EXPECT_EQ(small, cpp.encode_image_rgb(rgb, 4, 3).data);

  const char* labels[] = {"airplane", "ship", "cat"};
  const char* templates[] = {"a photo of a {}.", "a picture of the {c}."};
  std::vector<float> p(3, 0.f);
  ASSERT_EQ(clip_zeroshot(c.m, img.data(), labels, 3, templates, 2, p.data()), CLIP_OK) << clip_last_error();
  const auto want = cpp.zeroshot(std::span<const float>(img.data(), size_t(D)), {"airplane", "ship", "cat"}, 0,
                                 {"a photo of a {}.", "a picture of the {c}."});
  for (const auto& w : want) EXPECT_EQ(p[size_t(w.index)], w.probability) << w.label;
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-5);
  ASSERT_EQ(clip_zeroshot(c.m, img.data(), labels, 3, nullptr, 0, p.data()), CLIP_OK);  // the default template
}

// The precision option reaches the model: bf16 where the CPU has it (features within the bf16
// bound of issue 17, cosine >= 0.9995 to fp32), a failed load naming the problem where it has
// not; an unknown precision is a failed load whose message lists the known ones.
TEST(CApi, PrecisionOption) {
  clip_model_options o;
  clip_model_options_init(&o);
  EXPECT_EQ(o.precision, nullptr);
  o.precision = "int9";
  clip_model* m = nullptr;
  EXPECT_EQ(clip_model_load(kModel.c_str(), &o, &m), CLIP_ERROR_FAILED);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(clip_last_error()).find("bf16"), std::string::npos) << clip_last_error();

  o.precision = "bf16";
  const clip_status st = clip_model_load(kModel.c_str(), &o, &m);
  clip::ModelOptions cpp_options;
  cpp_options.precision = "bf16";
  bool cpp_loads = true;
  try {
    (void)clip::Model::load(kModel, cpp_options);
  } catch (const clip::Error&) {
    cpp_loads = false;
  }
  ASSERT_EQ(st == CLIP_OK, cpp_loads) << clip_last_error();  // the same answer as the C++ API
  if (st != CLIP_OK) {
    EXPECT_NE(std::string(clip_last_error()).find("bf16"), std::string::npos) << clip_last_error();
    return;
  }
  Loaded fp32;
  const int D = clip_model_embed_dim(m);
  const char* paths[] = {kShip.c_str(), kCat.c_str()};
  std::vector<float> a(size_t(2 * D)), b(a.size());
  ASSERT_EQ(clip_encode_image_files(m, paths, 2, a.data()), CLIP_OK) << clip_last_error();
  ASSERT_EQ(clip_encode_image_files(fp32.m, paths, 2, b.data()), CLIP_OK) << clip_last_error();
  for (int r = 0; r < 2; ++r) {
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < D; ++i) {
      const double x = a[size_t(r * D + i)], y = b[size_t(r * D + i)];
      dot += x * y, na += x * x, nb += y * y;
    }
    EXPECT_GE(dot / std::sqrt(na * nb), 0.9995) << "row " << r;
  }
  EXPECT_NE(a, b);  // it did run in bf16
  clip_model_free(m);
}

TEST(CApi, MisuseIsAStatusWithAMessage) {
  Loaded c;
  ASSERT_NE(c.m, nullptr);
  float out[1024];
  int32_t ids[1024];
  clip_model* none = reinterpret_cast<clip_model*>(0x1);
  EXPECT_EQ(clip_model_load(nullptr, nullptr, &none), CLIP_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(clip_model_load("/nonexistent/model", nullptr, &none), CLIP_ERROR_FAILED);
  EXPECT_EQ(none, nullptr);
  EXPECT_NE(std::string(clip_last_error()).find("/nonexistent/model"), std::string::npos) << clip_last_error();
  const char* missing[] = {"/nonexistent.jpg"};
  EXPECT_EQ(clip_encode_image_files(c.m, missing, 1, out), CLIP_ERROR_FAILED);
  EXPECT_NE(std::string(clip_last_error()).find("/nonexistent.jpg"), std::string::npos);
  const char* with_null[] = {"a", nullptr};
  EXPECT_EQ(clip_encode_texts(c.m, with_null, 2, 0, out), CLIP_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(clip_last_error()).find("texts[1] is NULL"), std::string::npos);
  EXPECT_EQ(clip_encode_texts(c.m, with_null, 0, 0, out), CLIP_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(clip_encode_texts(nullptr, with_null, 1, 0, out), CLIP_ERROR_INVALID_ARGUMENT);
  std::string long_text = "a photo of";
  for (int i = 0; i < 100; ++i) long_text += " cat";
  const char* longs[] = {long_text.c_str()};
  EXPECT_EQ(clip_encode_texts(c.m, longs, 1, 0, out), CLIP_ERROR_FAILED);
  EXPECT_NE(std::string(clip_last_error()).find("too long"), std::string::npos);
  EXPECT_EQ(clip_encode_texts(c.m, longs, 1, 1, out), CLIP_OK);
  EXPECT_STREQ(clip_last_error(), "");  // a success clears it
  EXPECT_EQ(clip_tokenize(c.m, longs, 1, 0, ids), CLIP_ERROR_FAILED);
  const unsigned char px[3] = {1, 2, 3};
  EXPECT_EQ(clip_encode_image_rgb(c.m, px, 0, 1, out), CLIP_ERROR_INVALID_ARGUMENT);
  const char* labels[] = {"cat"};
  const char* bad_template[] = {"no placeholder"};
  float p[1];
  EXPECT_EQ(clip_zeroshot(c.m, out, labels, 1, bad_template, 1, p), CLIP_ERROR_FAILED);
  EXPECT_NE(std::string(clip_last_error()).find("has no {} or {c}"), std::string::npos);
  EXPECT_EQ(clip_zeroshot(c.m, out, labels, 1, bad_template, 0, p), CLIP_ERROR_INVALID_ARGUMENT);
  clip_model_free(nullptr);
  EXPECT_EQ(clip_model_embed_dim(nullptr), 0);
  // Messages are per thread.
  EXPECT_EQ(clip_encode_image_files(c.m, missing, 1, out), CLIP_ERROR_FAILED);
  std::string other;
  std::thread([&] { other = clip_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(clip_last_error()), "");
}

}  // namespace
