// The `clip` command end to end: embed, zeroshot, similarity on a tiny ViT CLIP written by the
// PyTorch reference script, checked against the library API; bad input gives exit status 1
// and one "clip: error: <file>: <problem>" line, never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <clip/clip.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/io.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const std::string kVocab = std::string(CLIP_SHARED_DATA) + "/clip_vocab/bpe_simple_vocab_16e6.txt.gz";
const std::string kPhotos = std::string(CLIP_SHARED_DATA) + "/sample_photos";
const std::string kTmp = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_cli";

using clip::test::CliRun;

CliRun clip_cmd(const std::string& args) { return clip::test::run_clip(args, kTmp); }

std::string model_dir() { return clip::test::tiny_vocab_model_dir(); }

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kVocab)) GTEST_FAIL() << "shared data not found at " << CLIP_SHARED_DATA;
    ASSERT_TRUE(fs::exists(std::string(CLIP_BINARY_DIR) + "/clip")) << "the clip binary is not built";
    ASSERT_FALSE(model_dir().empty()) << "reference_model.py failed";
  }
  std::string common() const { return "--model " + model_dir() + " --vocab " + kVocab; }
};

TEST_F(CliTest, EmbedWritesNormalizedRowsInInputOrderWithASidecar) {
  const std::string a = kPhotos + "/skimage/chelsea.png", b = kPhotos + "/skimage/coffee.png";
  const std::string texts = kTmp + "/texts.txt";
  fs::create_directories(kTmp);
  clip::write_file_atomic(texts, std::string("a photo of a cat\r\nthe coffee\n"));
  const std::string out = kTmp + "/emb.npy";
  CliRun r = clip_cmd("embed " + common() + " --images " + a + " " + b + " --texts " + texts +
                   " --text \"a rocket\" --batch-size 1 -o " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout must stay clean: " << r.out;
  std::vector<int64_t> shape;
  std::vector<float> e = clip::read_npy_f32(out, shape);
  ASSERT_EQ(shape, (std::vector<int64_t>{5, 64}));
  clip::ModelOptions o;
  o.vocab_path = kVocab;
  clip::Model m = clip::Model::load(model_dir(), o);
  clip::Embeddings imgs = m.encode_image_files({a, b});
  clip::Embeddings txts = m.encode_texts({"a photo of a cat", "the coffee", "a rocket"});
  for (int j = 0; j < 2 * 64; ++j) EXPECT_NEAR(e[j], imgs.data[j], 1e-6);
  for (int j = 0; j < 3 * 64; ++j) EXPECT_NEAR(e[2 * 64 + j], txts.data[j], 1e-6);
  std::string tsv = clip::read_text_file(kTmp + "/emb.tsv");
  EXPECT_EQ(tsv, "row\tkind\tsource\n0\timage\t" + a + "\n1\timage\t" + b +
                     "\n2\ttext\ta photo of a cat\n3\ttext\tthe coffee\n4\ttext\ta rocket\n");
}

TEST_F(CliTest, EmbedExpandsDirectoriesSorted) {
  const std::string dir = kTmp + "/imgs";
  fs::create_directories(dir + "/sub");
  fs::copy_file(kPhotos + "/skimage/coffee.png", dir + "/b.png", fs::copy_options::overwrite_existing);
  fs::copy_file(kPhotos + "/skimage/chelsea.png", dir + "/sub/a.png", fs::copy_options::overwrite_existing);
  clip::write_file_atomic(dir + "/notes.txt", std::string("not an image"));
  CliRun r = clip_cmd("embed " + common() + " --images " + dir + " -o " + kTmp + "/dir.npy");
  ASSERT_EQ(r.status, 0) << r.err;
  std::string tsv = clip::read_text_file(kTmp + "/dir.tsv");
  EXPECT_EQ(tsv, "row\tkind\tsource\n0\timage\t" + dir + "/b.png\n1\timage\t" + dir + "/sub/a.png\n");
}

TEST_F(CliTest, ZeroshotPrintsProbabilitiesThatSumToOne) {
  CliRun r = clip_cmd("zeroshot " + common() + " " + kPhotos + "/skimage/chelsea.png --labels \"cat, dog,rocket\" -k 3");
  ASSERT_EQ(r.status, 0) << r.err;
  double total = 0;
  int lines = 0;
  size_t pos = r.out.find('\n') + 1;
  while (pos < r.out.size()) {
    size_t nl = r.out.find('\n', pos);
    std::string line = r.out.substr(pos, nl - pos);
    total += std::stod(line);
    ++lines;
    pos = nl + 1;
  }
  EXPECT_EQ(lines, 3);
  EXPECT_NEAR(total, 100.0, 0.05);
  for (const char* label : {"cat", "dog", "rocket"}) EXPECT_NE(r.out.find(std::string("%  ") + label), std::string::npos);
}

TEST_F(CliTest, SimilarityPrintsTheCosineMatrix) {
  CliRun r = clip_cmd("similarity " + common() + " " + kPhotos + "/skimage/chelsea.png --text \"a cat\" --text \"a dog\"");
  ASSERT_EQ(r.status, 0) << r.err;
  clip::ModelOptions o;
  o.vocab_path = kVocab;
  clip::Model m = clip::Model::load(model_dir(), o);
  clip::Embeddings c = clip::cosine_matrix(m.encode_image_files({kPhotos + "/skimage/chelsea.png"}),
                                           m.encode_texts({"a cat", "a dog"}));
  char expect[256];
  std::snprintf(expect, sizeof expect, "\t%.6f\t%.6f\n", double(c.data[0]), double(c.data[1]));
  EXPECT_NE(r.out.find(expect), std::string::npos) << r.out;
}

void expect_clear_error(const CliRun& r, const std::string& must_name) {
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.err.rfind("clip: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(must_name), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(CliTest, BadInputsGiveOneClearErrorAndExitStatusOne) {
  fs::create_directories(kTmp);
  const std::string corrupt = kTmp + "/corrupt.jpg";
  std::string bytes = clip::read_text_file(kPhotos + "/matplotlib/grace_hopper.jpg");
  clip::write_file_atomic(corrupt, bytes.substr(0, 300));  // truncated JPEG
  expect_clear_error(clip_cmd("embed " + common() + " --strict --images " + corrupt + " -o " + kTmp + "/x.npy"), corrupt);
  expect_clear_error(clip_cmd("zeroshot " + common() + " /nonexistent.png --labels a,b"), "/nonexistent.png");
  const std::string hostile = kTmp + "/hostile.safetensors";
  std::string h(8, '\0');
  h[0] = char(0xff);
  h[7] = char(0x7f);  // a header length of ~9.2e18 bytes
  clip::write_file_atomic(hostile, h + "{}");
  expect_clear_error(clip_cmd("embed --model " + hostile + " --text x -o " + kTmp + "/x.npy"), hostile);
  const std::string invalid = kTmp + "/invalid.txt";
  clip::write_file_atomic(invalid, std::string("caf\xc3\x28 \xff ok\n"));  // invalid UTF-8 is replaced, not fatal
  CliRun r = clip_cmd("embed " + common() + " --texts " + invalid + " -o " + kTmp + "/inv.npy");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(clip_cmd("embed " + common() + " -o " + kTmp + "/x.npy").status, 0);  // nothing to embed
}

}  // namespace

// Issue 16, item 4: a mistyped command is named, with the nearest one.
TEST(CliGrammar, UnknownCommandIsNamedWithTheNearest) {
  ASSERT_TRUE(fs::exists(std::string(CLIP_BINARY_DIR) + "/clip")) << "the clip binary is not built";
  CliRun r = clip_cmd("embd --images x.jpg");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unknown command 'embd'; did you mean 'embed'?"), std::string::npos) << r.err;
  r = clip_cmd("upload --db x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unknown command 'upload'"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("did you mean"), std::string::npos) << r.err;  // nothing near
  EXPECT_NE(r.err.find("zeroshot"), std::string::npos) << "lists the commands: " << r.err;
}

// Issue 16, item 12: an empty corpus is an error, not a byte-only vocabulary.
TEST(CliGrammar, TokenizerTrainRefusesAnEmptyCorpus) {
  ASSERT_TRUE(fs::exists(std::string(CLIP_BINARY_DIR) + "/clip")) << "the clip binary is not built";
  fs::create_directories(kTmp);
  const std::string empty = kTmp + "/empty_corpus.txt", blank = kTmp + "/blank_corpus.txt";
  clip::write_file_atomic(empty, std::string());
  clip::write_file_atomic(blank, std::string("\n  \n\t\n"));
  fs::remove_all(kTmp + "/vocab_empty");
  fs::remove_all(kTmp + "/vocab_blank");
  CliRun r = clip_cmd("tokenizer train --vocab-size 600 -o " + kTmp + "/vocab_empty " + empty);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(empty + ": no text"), std::string::npos) << r.err;
  r = clip_cmd("tokenizer train --vocab-size 600 -o " + kTmp + "/vocab_blank " + blank);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("the corpus has no words"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(kTmp + "/vocab_blank/bpe_vocab.txt.gz"));
}

// Issue 16, item 12: Embeddings::row checks its index.
TEST(CliGrammar, EmbeddingsRowChecksItsIndex) {
  clip::Embeddings e;
  e.rows = 2;
  e.cols = 3;
  e.data.assign(6, 1.f);
  EXPECT_EQ(e.row(1).size(), 3u);
  EXPECT_THROW(e.row(2), clip::Error);
  EXPECT_THROW(e.row(-1), clip::Error);
}
