// Issue 16: a command line a new user can trust, each item driven through the real binary on a
// tiny ViT CLIP written by the PyTorch reference script (OpenAI's vocabulary size, context 77):
// bad files skipped with a warning and a summary (--strict: fatal), --truncate everywhere text
// is taken, the default vocabulary found from any directory, one template rule, output paths
// checked before any work, eval --limit stratified and no results written unasked, short range
// errors, --json and saved embeddings, one grammar with examples in every --help.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <clip/clip.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/io.h"
#include "test_support.h"

namespace fs = std::filesystem;
using clip::test::CliRun;
using nlohmann::json;

namespace {

const std::string kVocab = std::string(CLIP_SHARED_DATA) + "/clip_vocab/bpe_simple_vocab_16e6.txt.gz";
const std::string kPhotos = std::string(CLIP_SHARED_DATA) + "/sample_photos";
const std::string kTmp = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_cli_grammar";
const std::string kClip = std::string(CLIP_BINARY_DIR) + "/clip";

CliRun clip_cmd(const std::string& args) { return clip::test::run_clip(args, kTmp); }

// `clip` run from `dir` with `env` (for env(1): "CLIP_VOCAB=x" or "-u CLIP_VOCAB").
CliRun clip_in(const std::string& dir, const std::string& env, const std::string& args) {
  return clip::test::run_clip(args, kTmp, "cd '" + dir + "' && env " + env);
}

std::string model_dir() { return clip::test::tiny_vocab_model_dir(); }

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    EXPECT_NO_THROW(v.push_back(json::parse(line))) << line;
  }
  return v;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// 120 words: far more than 77 tokens.
std::string long_text() {
  std::string t = "a photo of";
  for (int i = 0; i < 120; ++i) t += " cat";
  return t;
}

class Grammar : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kVocab)) << "shared data not found at " << CLIP_SHARED_DATA;
    ASSERT_TRUE(fs::exists(kClip)) << "the clip binary is not built";
    ASSERT_FALSE(model_dir().empty()) << "reference_model.py failed";
    fs::create_directories(kTmp);
  }
  std::string model() const { return "-m " + model_dir() + " --vocab " + kVocab; }
  clip::Model api() const {
    clip::ModelOptions o;
    o.vocab_path = kVocab;
    return clip::Model::load(model_dir(), o);
  }
  // A folder: two good photos, a corrupt JPEG, a .tif and a hidden file (neither scanned).
  std::string mixed_folder() const {
    const std::string dir = kTmp + "/mixed";
    fs::remove_all(dir);
    fs::create_directories(dir + "/sub");
    fs::copy_file(kPhotos + "/skimage/chelsea.png", dir + "/a.png");
    fs::copy_file(kPhotos + "/skimage/coffee.png", dir + "/sub/c.png");
    const std::string jpeg = clip::read_text_file(kPhotos + "/matplotlib/grace_hopper.jpg");
    clip::write_file_atomic(dir + "/b.jpg", jpeg.substr(0, 300));
    clip::write_file_atomic(dir + "/scan.tif", std::string("II*\0garbage", 11));
    clip::write_file_atomic(dir + "/.hidden.png", std::string("not a png"));
    return dir;
  }
};

// Item 2: a bad file is skipped with one warning naming it and a summary; the rest is written
// and the .tsv names the rows that exist; --strict stops at it. Folder scans take only the
// formats the decoder reads (the .tif and the hidden file are not picked up).
TEST_F(Grammar, BadImagesAreSkippedWithAWarningAndASummaryOrFatalWithStrict) {
  const std::string dir = mixed_folder();
  const std::string out = kTmp + "/mixed.npy";
  CliRun r = clip_cmd("embed " + model() + " " + dir + " -o " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(count(r.err, "warning: skipped"), 1u) << r.err;
  EXPECT_NE(r.err.find("warning: skipped " + dir + "/b.jpg: corrupt JPEG"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("skipped 1 of 3 images"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("scan.tif"), std::string::npos) << r.err;
  std::vector<int64_t> shape;
  const std::vector<float> e = clip::read_npy_f32(out, shape);
  ASSERT_EQ(shape, (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(clip::read_text_file(kTmp + "/mixed.tsv"),
            "row\tkind\tsource\n0\timage\t" + dir + "/a.png\n1\timage\t" + dir + "/sub/c.png\n");
  const clip::Embeddings good = api().encode_image_files({dir + "/a.png", dir + "/sub/c.png"});
  for (size_t i = 0; i < e.size(); ++i) EXPECT_NEAR(e[i], good.data[i], 1e-6);

  // zeroshot and similarity go on the same way; a .tif named explicitly is tried and skipped.
  r = clip_cmd("zeroshot " + model() + " " + dir + " " + dir + "/scan.tif --labels cat,cup --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json_lines(r.out).size(), 2u) << r.out;
  EXPECT_NE(r.err.find("skipped " + dir + "/scan.tif"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("skipped 2 of 4 images"), std::string::npos) << r.err;
  r = clip_cmd("similarity " + model() + " " + dir + " --text cat");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(count(r.out, "\n"), 3u) << r.out;  // header + 2 rows

  // --strict: the first bad file is fatal, one line naming it, nothing written.
  fs::remove(out);
  r = clip_cmd("embed " + model() + " --strict " + dir + " -o " + out);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("clip: error: " + dir + "/b.jpg", 0), 0u) << r.err;
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  EXPECT_FALSE(fs::exists(out));
  // Every image bad: an error, not an empty output.
  r = clip_cmd("embed " + model() + " " + dir + "/b.jpg -o " + out);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("none of the 1 images could be read"), std::string::npos) << r.err;
}

// Item 3: a text longer than the context is an error naming it and --truncate, in embed,
// similarity, zeroshot (a template) and eval; --truncate cuts it as clip.tokenize(truncate=True)
// and says so.
TEST_F(Grammar, LongTextsNeedTruncateAndTruncationIsReported) {
  const std::string text = long_text();
  const std::string out = kTmp + "/long.npy";
  for (const std::string& cmd :
       {"embed " + model() + " --text '" + text + "' -o " + out,
        "similarity " + model() + " " + kPhotos + "/skimage/chelsea.png --text '" + text + "'",
        "zeroshot " + model() + " " + kPhotos + "/skimage/chelsea.png --labels cat,dog --template '" + text + " {}'"}) {
    SCOPED_TRACE(cmd.substr(0, 10));
    CliRun r = clip_cmd(cmd);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("too long for context length 77"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--truncate"), std::string::npos) << r.err;
    r = clip_cmd(cmd + " --truncate");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  }
  std::vector<int64_t> shape;
  const std::vector<float> e = clip::read_npy_f32(out, shape);
  const clip::Embeddings ref = api().encode_texts({text}, 64, /*truncate=*/true);
  ASSERT_EQ(e.size(), ref.data.size());
  for (size_t i = 0; i < e.size(); ++i) EXPECT_NEAR(e[i], ref.data[i], 1e-6);
  // The API: an error without truncate, the cut text's index with it.
  EXPECT_THROW(api().encode_texts({"short", text}), clip::Error);
  std::vector<int64_t> cut;
  api().encode_texts({"short", text}, 64, true, &cut);
  EXPECT_EQ(cut, (std::vector<int64_t>{1}));
  // eval: a long template.
  const std::string set = kTmp + "/two_classes";
  fs::create_directories(set + "/cat");
  fs::create_directories(set + "/cup");
  fs::copy_file(kPhotos + "/skimage/chelsea.png", set + "/cat/0.png", fs::copy_options::overwrite_existing);
  fs::copy_file(kPhotos + "/skimage/coffee.png", set + "/cup/0.png", fs::copy_options::overwrite_existing);
  clip::write_file_atomic(kTmp + "/long_templates.txt", text + " {}\na photo of a {}.\n");
  const std::string eval = "eval zeroshot " + model() + " -d " + set + " --no-cache --templates " + kTmp + "/long_templates.txt";
  CliRun r = clip_cmd(eval);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--truncate"), std::string::npos) << r.err;
  r = clip_cmd(eval + " --truncate");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
}

// Item 5: `clip tokenize "Hello World!"` works from any directory (OpenAI's vocabulary is
// installed with the program, found beside the executable); a missing one names where it looked.
TEST_F(Grammar, DefaultVocabularyIsFoundFromAnyDirectory) {
  CliRun r = clip_in("/", "-u CLIP_VOCAB", "tokenize 'Hello World!'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("ids: 3306 1002 256"), std::string::npos) << r.out;  // clip.tokenize's ids
  r = clip_in("/", "CLIP_VOCAB=/nonexistent/vocab.txt.gz", "tokenize hello");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/vocab.txt.gz"), std::string::npos) << r.err;
  // A model without tokenizer files gets the same vocabulary, from anywhere.
  const std::string out = kTmp + "/vocab_default.npy";
  r = clip_in("/", "-u CLIP_VOCAB", "embed -m " + model_dir() + " --text 'a dog' -o " + out);
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<int64_t> shape;
  const std::vector<float> e = clip::read_npy_f32(out, shape);
  const clip::Embeddings ref = api().encode_texts({"a dog"});
  for (size_t i = 0; i < e.size(); ++i) EXPECT_NEAR(e[i], ref.data[i], 1e-6);
}

// Item 6: one template rule everywhere: {} and {c} both stand for the label; a template with
// neither is the same error in zeroshot and eval.
TEST_F(Grammar, TemplatesFollowOneRule) {
  const std::string img = kPhotos + "/skimage/chelsea.png";
  CliRun a = clip_cmd("zeroshot " + model() + " " + img + " --labels cat,dog --template 'a {} photo, a {}' --json");
  CliRun b = clip_cmd("zeroshot " + model() + " " + img + " --labels cat,dog --template 'a {c} photo, a {c}' --json");
  ASSERT_EQ(a.status, 0) << a.err;
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  const clip::Model m = api();
  const auto preds = m.zeroshot(m.encode_image_files({img}).row(0), {"cat", "dog"}, 0, {"a {} photo, a {}"});
  const json j = json::parse(a.out);
  EXPECT_NEAR(j["predictions"][0]["probability"].get<double>(), preds[0].probability, 1e-5);
  EXPECT_EQ(clip::format_prompt("a {c} of a {}", "cat"), "a cat of a cat");
  CliRun z = clip_cmd("zeroshot " + model() + " " + img + " --labels cat,dog --template 'a photo'");
  EXPECT_EQ(z.status, 1);
  EXPECT_NE(z.err.find("prompt template \"a photo\" has no {} or {c}"), std::string::npos) << z.err;
  clip::write_file_atomic(kTmp + "/no_placeholder.txt", std::string("a photo\n"));
  fs::create_directories(kTmp + "/set1/cat");
  fs::copy_file(img, kTmp + "/set1/cat/0.png", fs::copy_options::overwrite_existing);
  CliRun e = clip_cmd("eval zeroshot " + model() + " -d " + kTmp + "/set1 --no-cache --templates " + kTmp +
                      "/no_placeholder.txt");
  EXPECT_EQ(e.status, 1);
  EXPECT_NE(e.err.find("prompt template \"a photo\" has no {} or {c}"), std::string::npos) << e.err;
}

// Item 7: output paths are checked before any work; the message names the flag and the path,
// never a temporary file.
TEST_F(Grammar, OutputPathsAreCheckedBeforeAnyWork) {
  const std::string img = kPhotos + "/skimage/chelsea.png";
  CliRun r = clip_cmd("embed " + model() + " " + img + " -o /nonexistent/folder/e.npy");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("-o /nonexistent/folder/e.npy: no folder /nonexistent/folder"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(".tmp"), std::string::npos) << r.err;
  r = clip_cmd("embed " + model() + " " + img + " -o " + kTmp);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("must be a .npy file"), std::string::npos) << r.err;
  r = clip_cmd("eval zeroshot " + model() + " -d /nonexistent -o /proc/results");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("-o /proc/results: cannot create this folder"), std::string::npos) << r.err;  // before the dataset
  r = clip_cmd("train --train-data /nonexistent.csv --model-config ViT-B-32 --steps 1 --output /proc/run");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--output /proc/run: cannot create this folder"), std::string::npos) << r.err;
  clip::write_file_atomic(kTmp + "/corpus_for_output_check.txt", std::string("a photo of a cat\n"));
  r = clip_cmd("tokenizer train -o /proc/vocab " + kTmp + "/corpus_for_output_check.txt");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("-o /proc/vocab: cannot create this folder"), std::string::npos) << r.err;
}

// Item 8: eval --limit takes a class-stratified seeded subset and says so; eval writes no
// results folder unless -o is given.
TEST_F(Grammar, EvalLimitIsStratifiedAndNothingIsWrittenUnasked) {
  const std::string cifar = std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test";
  ASSERT_TRUE(fs::exists(cifar));
  const std::string dir = kTmp + "/cwd_eval";
  fs::remove_all(dir);
  fs::create_directories(dir);
  CliRun r = clip_in(dir, "-u CLIP_VOCAB", "eval zeroshot " + model() + " -d " + cifar + " --limit 20 --no-cache --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("a class-stratified random subset of 20 of the 10000 samples"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(dir)) << "eval wrote into the current directory unasked";
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  EXPECT_EQ(lines[0]["task"], "zeroshot_classification");
  EXPECT_EQ(lines[0]["details"]["samples"].get<int>(), 20);
  // Two per class: a per-class recall for all ten classes.
  r = clip_cmd("eval zeroshot " + model() + " -d " + cifar + " --limit 20 --no-cache --per-class --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["details"]["per_class_recall"].size(), 10u) << r.out;
}

// Item 9: range checks with short messages naming the flag.
TEST_F(Grammar, OutOfRangeValuesAreShortClearErrors) {
  struct Case {
    std::string args, must_say;
  };
  const std::vector<Case> cases = {
      {"eval zeroshot " + model() + " -d x --batch-size 0", "--batch-size: Value 0 not in range 1 to 4096"},
      {"embed " + model() + " --text x -o " + kTmp + "/t.npy --threads 100000", "--threads 100000: this machine has"},
      {"eval zeroshot " + model() + " -d x --threads -1", "--threads -1: this machine has"},
      {"train --train-data x --model-config ViT-B-32 --output " + kTmp + "/r --workers -2", "--workers -2: must be 1..256"},
      {"train --train-data x --model-config ViT-B-32 --output " + kTmp + "/r --lr -1", "--lr -1.0: must be a positive"},
      {"train --train-data x --model-config ViT-B-32 --output " + kTmp + "/r --beta2 1", "--beta2 1.0: must be in [0, 1)"},
      {"train --train-data x --model-config ViT-B-32 --output " + kTmp + "/r --threads 5000", "--threads 5000: must be 1.."},
  };
  for (const Case& c : cases) {
    CliRun r = clip_cmd(c.args);
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_NE(r.err.find(c.must_say), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_LT(r.err.size(), 200u) << r.err;
  }
}

// Item 10: --json on zeroshot, similarity, tokenize and eval; similarity's TSV escapes a tab in
// a text; zeroshot and similarity read embed's saved rows instead of encoding again.
TEST_F(Grammar, JsonOutputsEscapedTsvAndSavedEmbeddings) {
  const std::string a = kPhotos + "/skimage/chelsea.png", b = kPhotos + "/skimage/coffee.png";
  CliRun z = clip_cmd("zeroshot " + model() + " " + a + " " + b + " --labels cat,cup,dog -k 2 --json");
  ASSERT_EQ(z.status, 0) << z.err;
  const auto zl = json_lines(z.out);
  ASSERT_EQ(zl.size(), 2u);
  EXPECT_EQ(zl[0]["image"], a);
  EXPECT_EQ(zl[0]["predictions"].size(), 2u);
  EXPECT_TRUE(zl[0]["predictions"][0].contains("probability") && zl[0]["predictions"][0].contains("cosine"));

  CliRun s = clip_cmd("similarity " + model() + " " + a + " --text 'a\tcat' --text dog --json");
  ASSERT_EQ(s.status, 0) << s.err;
  const json sj = json::parse(s.out);
  EXPECT_EQ(sj["scores"][0]["text"], "a\tcat");
  const clip::Model m = api();
  const clip::Embeddings c = clip::cosine_matrix(m.encode_image_files({a}), m.encode_texts({"a\tcat", "dog"}));
  EXPECT_NEAR(sj["scores"][0]["score"].get<double>(), c.data[0], 1e-6);
  CliRun t = clip_cmd("similarity " + model() + " " + a + " --text 'a\tcat' --text dog");
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out.substr(0, t.out.find('\n')), "image\ta\\tcat\tdog");

  CliRun k = clip_cmd("tokenize --vocab " + kVocab + " --json 'Hello World!' 'a cat'");
  ASSERT_EQ(k.status, 0) << k.err;
  const auto kl = json_lines(k.out);
  ASSERT_EQ(kl.size(), 2u);
  EXPECT_EQ(kl[0]["ids"], json({3306, 1002, 256}));
  EXPECT_EQ(kl[1]["tokens"], json({"a</w>", "cat</w>"}));

  // Saved embeddings: the same numbers as encoding again.
  const std::string saved = kTmp + "/saved.npy";
  ASSERT_EQ(clip_cmd("embed " + model() + " " + a + " " + b + " --text 'a\tcat' --text dog -o " + saved).status, 0);
  CliRun zs = clip_cmd("zeroshot " + model() + " --embeddings " + saved + " --labels cat,cup,dog -k 2 --json");
  ASSERT_EQ(zs.status, 0) << zs.err;
  const auto zsl = json_lines(zs.out);
  ASSERT_EQ(zsl.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(zsl[i]["image"], zl[i]["image"]);
    EXPECT_EQ(zsl[i]["predictions"][0]["label"], zl[i]["predictions"][0]["label"]);
    EXPECT_NEAR(zsl[i]["predictions"][0]["probability"].get<double>(),
                zl[i]["predictions"][0]["probability"].get<double>(), 1e-6);
  }
  CliRun ss = clip_cmd("similarity --embeddings " + saved + " --json");  // no model needed
  ASSERT_EQ(ss.status, 0) << ss.err;
  const auto ssl = json_lines(ss.out);
  ASSERT_EQ(ssl.size(), 2u);
  EXPECT_EQ(ssl[0]["scores"][0]["text"], "a\tcat");
  EXPECT_NEAR(ssl[0]["scores"][0]["score"].get<double>(), c.data[0], 1e-6);
  // Rows of another model are refused.
  const std::string other = kTmp + "/other.npy";
  const std::vector<float> wrong(3 * 8, 0.1f);
  clip::write_npy_f32(other, wrong.data(), {3, 8});
  clip::write_file_atomic(kTmp + "/other.tsv",
                          std::string("row\tkind\tsource\n0\timage\tx.png\n1\timage\ty.png\n2\ttext\tz\n"));
  CliRun bad = clip_cmd("zeroshot " + model() + " --embeddings " + other + " --labels cat,dog");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("do not come from this model"), std::string::npos) << bad.err;

  fs::create_directories(kTmp + "/set_json/cat");
  fs::copy_file(a, kTmp + "/set_json/cat/0.png", fs::copy_options::overwrite_existing);
  CliRun e = clip_cmd("eval zeroshot " + model() + " -d " + kTmp + "/set_json --no-cache --json");
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_EQ(json_lines(e.out).size(), 1u) << e.out;  // stdout holds only the JSON line
}

// Item 11: one grammar. Images positional or --images in all three commands; --texts is a file
// (a mistyped name is an error, not a caption); every command's --help has examples.
TEST_F(Grammar, OneGrammarAcrossCommands) {
  const std::string a = kPhotos + "/skimage/chelsea.png";
  for (const std::string& cmd : {std::string("zeroshot"), std::string("similarity")}) {
    const std::string rest = cmd == "zeroshot" ? " --labels cat,dog --json" : " --text cat --json";
    CliRun p = clip_cmd(cmd + " " + model() + " " + a + rest);
    CliRun n = clip_cmd(cmd + " " + model() + " --images " + a + rest);
    ASSERT_EQ(p.status, 0) << p.err;
    EXPECT_EQ(p.out, n.out) << cmd;
  }
  const std::string e1 = kTmp + "/g1.npy", e2 = kTmp + "/g2.npy";
  ASSERT_EQ(clip_cmd("embed " + model() + " " + a + " -o " + e1).status, 0);
  ASSERT_EQ(clip_cmd("embed " + model() + " --images " + a + " -o " + e2).status, 0);
  EXPECT_EQ(clip::read_file(e1), clip::read_file(e2));
  CliRun typo = clip_cmd("similarity " + model() + " " + a + " --texts captions-typo.txt");
  EXPECT_NE(typo.status, 0);
  EXPECT_NE(typo.err.find("captions-typo.txt"), std::string::npos) << typo.err;
  for (const std::string& cmd : {"embed", "zeroshot", "similarity", "tokenize", "eval zeroshot", "eval linear-probe",
                                 "eval retrieval", "eval robustness", "train", "info", "data corrupt"}) {
    CliRun h = clip_cmd(cmd + " --help");
    EXPECT_EQ(h.status, 0) << cmd;
    EXPECT_NE(h.out.find("Examples:"), std::string::npos) << cmd << " --help has no examples:\n" << h.out;
  }
  // The shared flags exist wherever a model computes.
  for (const std::string& cmd : {"embed", "zeroshot", "similarity", "eval zeroshot", "eval linear-probe",
                                 "eval retrieval", "eval robustness", "train"}) {
    CliRun h = clip_cmd(cmd + " --help");
    for (const char* flag : {"--threads", "--batch-size"})
      EXPECT_NE(h.out.find(flag), std::string::npos) << cmd << " lacks " << flag;
  }
  for (const std::string& cmd : {"embed", "zeroshot", "similarity", "eval zeroshot", "eval retrieval"}) {
    CliRun h = clip_cmd(cmd + " --help");
    EXPECT_NE(h.out.find("--truncate"), std::string::npos) << cmd << " lacks --truncate";
  }
  for (const std::string& cmd : {"zeroshot", "similarity", "tokenize", "eval zeroshot", "eval linear-probe"}) {
    CliRun h = clip_cmd(cmd + " --help");
    EXPECT_NE(h.out.find("--json"), std::string::npos) << cmd << " lacks --json";
  }
}

}  // namespace
