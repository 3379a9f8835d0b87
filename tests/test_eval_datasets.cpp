// Dataset readers: RFC 4180 CSV (quotes, "" escapes, CRLF, newlines in quotes), captions
// grouped per image, class folders, IDX (real MNIST from the shared data), WebDataset tar
// shards written here with libarchive, brace expansion, and errors that name the file.
#include <gtest/gtest.h>

#include <map>

#include <filesystem>

#include "core/error.h"
#include "core/io.h"
#include "eval/corrupt.h"
#include "data/datasets.h"
#include "tar_writer.h"

using namespace clip::data;
using namespace clip::eval;
namespace fs = std::filesystem;

static std::string tmpdir(const std::string& name) {
  auto d = fs::path(CLIP_BINARY_DIR) / "eval_tmp" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

static clip::Image solid(int w, int h, uint8_t v) {
  clip::Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.mode = "RGB";
  im.pixels.assign(size_t(w) * h * 3, v);
  return im;
}

TEST(EvalDatasets, CsvRfc4180) {
  auto rows = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n\"x\ny\",,z\n", "t.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b,c", "d\"e"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"x\ny", "", "z"}));
  EXPECT_THROW(parse_csv("a,\"unterminated\n", "bad.csv"), clip::Error);
  EXPECT_THROW(parse_csv("\"a\"b,c\n", "bad.csv"), clip::Error);
  try {
    parse_csv("x\n\"open", "named.csv");
    FAIL();
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("named.csv:2"), std::string::npos) << e.what();
  }
}

TEST(EvalDatasets, CsvCaptionsGroupedByImage) {
  auto d = open_csv(std::string(CLIP_SOURCE_DIR) + "/tests/data/eval/captions_quoted.csv");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.samples[0].id, "a.png");
  EXPECT_EQ(d.samples[0].label, 1);
  ASSERT_EQ(d.samples[0].captions.size(), 2u);
  EXPECT_EQ(d.samples[0].captions[0], "A dog, running \"fast\"");
  EXPECT_EQ(d.samples[0].captions[1], "multi\nline caption");
  EXPECT_EQ(d.samples[1].captions, std::vector<std::string>{"plain caption"});
  EXPECT_TRUE(d.has_captions());
}

TEST(EvalDatasets, SharedFlickrAndCifarCsv) {
  const std::string flickr = std::string(CLIP_SHARED_DATA) + "/flickr8k_subset1000/captions.txt";
  const std::string cifar = std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test_labels.csv";
  if (!fs::exists(flickr) || !fs::exists(cifar)) GTEST_FAIL() << "shared data not present";
  DatasetOptions o;
  o.root = std::string(CLIP_SHARED_DATA) + "/flickr8k_subset1000/images";
  auto f = open_csv(flickr, o);
  EXPECT_EQ(f.size(), 1000u);
  size_t captions = 0;
  for (auto& s : f.samples) captions += s.captions.size();
  EXPECT_EQ(captions, 5000u);
  EXPECT_TRUE(fs::exists(f.samples[0].path)) << f.samples[0].path;
  auto c = open_csv(cifar);
  EXPECT_EQ(c.size(), 10000u);
  EXPECT_EQ(c.classnames.size(), 10u);
  EXPECT_EQ(c.classnames[0], "airplane");
  EXPECT_EQ(c.classnames[9], "truck");
  EXPECT_TRUE(c.has_labels());
  auto img = c.load_image(0);
  EXPECT_EQ(img.width, 32);
  // The class folders give the same class order (sorted names) and count.
  auto folders = open_class_folders(std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test");
  EXPECT_EQ(folders.size(), 10000u);
  EXPECT_EQ(folders.classnames, c.classnames);
}

TEST(EvalDatasets, Idx) {
  const std::string mnist = std::string(CLIP_SHARED_DATA) + "/mnist/t10k-images-idx3-ubyte.gz";
  if (!fs::exists(mnist)) GTEST_FAIL() << "shared data not present";
  auto all = open_dataset(mnist, {});
  ASSERT_EQ(all.size(), 10000u);
  EXPECT_EQ(all.samples[0].label, 7);  // MNIST test image 0 is a 7
  EXPECT_EQ(all.samples[1].label, 2);
  EXPECT_TRUE(all.subset_note.empty());
  // --limit: a seeded subset stratified by class (each class in proportion: MNIST's test
  // classes hold 892..1135 images, so 100 samples give 9..12 per class), in the original order.
  DatasetOptions o;
  o.limit = 100;
  auto d = open_dataset(mnist, o);
  EXPECT_EQ(d.size(), 100u);
  EXPECT_NE(d.subset_note.find("stratified"), std::string::npos) << d.subset_note;
  std::map<int, int> per_class;
  for (auto& s : d.samples) ++per_class[s.label];
  ASSERT_EQ(per_class.size(), 10u);
  for (auto& [label, count] : per_class) {
    EXPECT_GE(count, 8) << label;
    EXPECT_LE(count, 12) << label;
  }
  for (size_t i = 1; i < d.size(); ++i) EXPECT_LT(d.samples[i - 1].array_index, d.samples[i].array_index);
  // The same seed: the same subset; another seed: another one.
  auto again = open_dataset(mnist, o);
  o.limit_seed = 1;
  auto other = open_dataset(mnist, o);
  std::vector<int64_t> a, b, c;
  for (auto& s : d.samples) a.push_back(s.array_index);
  for (auto& s : again.samples) b.push_back(s.array_index);
  for (auto& s : other.samples) c.push_back(s.array_index);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto im = d.load_image(0);
  EXPECT_EQ(im.width, 28);
  EXPECT_EQ(im.mode, "L");
}

TEST(EvalDatasets, ClassFoldersAndWebDataset) {
  const std::string root = tmpdir("folders");
  for (auto cls : {"zebra", "ant"}) {
    fs::create_directories(root + "/" + cls);
    for (int i = 0; i < 3; ++i) {
      auto png = encode_png_rgb(solid(4, 3, uint8_t(i * 50)));
      clip::write_file_atomic(root + "/" + cls + "/" + std::to_string(i) + ".png", png.data(), png.size());
    }
  }
  clip::write_file_atomic(root + "/ant/notes.txt", std::string("not an image"));
  auto d = open_dataset(root);
  EXPECT_EQ(d.classnames, (std::vector<std::string>{"ant", "zebra"}));
  ASSERT_EQ(d.size(), 6u);
  EXPECT_EQ(d.samples[0].label, 0);
  EXPECT_EQ(d.samples[5].label, 1);
  EXPECT_EQ(d.load_image(1).pixels[0], 50);
  const uint64_t fp = d.fingerprint();
  EXPECT_EQ(fp, open_dataset(root).fingerprint());

  // Two WebDataset shards: key.png + key.cls + key.txt.
  const std::string dir = tmpdir("wds");
  for (int shard = 0; shard < 2; ++shard) {
    const std::string path = dir + "/shard-0" + std::to_string(shard) + ".tar";
    clip::test::TarWriter tar(path);
    ASSERT_TRUE(tar.ok()) << path;
    for (int k = 0; k < 2; ++k) {
      const std::string key = "s" + std::to_string(shard) + "/" + std::to_string(k);
      tar.add(key + ".png", encode_png_rgb(solid(2, 2, uint8_t(10 * (shard * 2 + k)))));
      tar.add(key + ".cls", std::to_string(shard * 2 + k) + "\n");
      tar.add(key + ".txt", "caption " + std::to_string(shard * 2 + k));
    }
  }
  auto w = open_dataset(dir + "/shard-{00..01}.tar");
  ASSERT_EQ(w.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(w.samples[size_t(i)].label, i);
    EXPECT_EQ(w.samples[size_t(i)].captions, std::vector<std::string>{"caption " + std::to_string(i)});
    EXPECT_EQ(w.load_image(size_t(i)).pixels[0], 10 * i);
  }
  // A corrupt shard is an error naming it.
  clip::write_file_atomic(dir + "/bad.tar", std::string(1000, 'x'));
  try {
    open_dataset(dir + "/bad.tar");
    FAIL();
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.tar"), std::string::npos) << e.what();
  }
}

TEST(EvalDatasets, ShardExpansionAndErrors) {
  EXPECT_EQ(expand_shards("a-{08..11}.tar,b.tar"),
            (std::vector<std::string>{"a-08.tar", "a-09.tar", "a-10.tar", "a-11.tar", "b.tar"}));
  EXPECT_THROW(expand_shards("a-{x..y}.tar"), clip::Error);
  EXPECT_THROW(open_dataset("/nonexistent/set.csv"), clip::Error);
  const std::string dir = tmpdir("csv_errors");
  clip::write_file_atomic(dir + "/nolabel.csv", std::string("foo,bar\n1,2\n"));
  EXPECT_THROW(open_dataset(dir + "/nolabel.csv"), clip::Error);
  clip::write_file_atomic(dir + "/badlabel.csv", std::string("path,label\na.png,cat\n"));
  EXPECT_THROW(open_dataset(dir + "/badlabel.csv"), clip::Error);
  clip::write_file_atomic(dir + "/short.csv", std::string("path,label\na.png\n"));
  EXPECT_THROW(open_dataset(dir + "/short.csv"), clip::Error);
}
