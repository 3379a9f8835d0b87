// The training loader (src/data/loader.h): every source kind (CSV/TSV, class folders, IDX,
// WebDataset shards, "::" concatenation), templated captions, a fixed order for a seed whatever
// the worker count, exact resume through seek(), skipping of corrupt images and empty captions,
// error messages, epoch boundaries, and the real CIFAR-10 test folder.
//
// Fixtures are written per test and per process (CTest runs the cases as parallel processes).
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io.h"
#include "data/loader.h"
#include "text/bpe_train.h"
#include "text/tokenizer.h"
#include "vision/image.h"
#include "vision/preprocess.h"
#include "tar_writer.h"

using namespace clip::data;
namespace fs = std::filesystem;

namespace {

// Scratch folders of this process, removed when it exits.
struct Cleanup {
  std::vector<fs::path> dirs;
  ~Cleanup() {
    std::error_code ec;
    for (auto& d : dirs) fs::remove_all(d, ec);
  }
};
Cleanup& cleanup() {
  static Cleanup c;
  return c;
}

fs::path make_scratch(const std::string& name) {
  const fs::path d = fs::path(CLIP_BINARY_DIR) / "data_loader_tmp" / (name + "." + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  cleanup().dirs.push_back(d);
  return d;
}

std::string scratch() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return make_scratch(std::string(info->test_suite_name()) + "." + info->name()).string();
}

// A small BPE vocabulary trained here, so the tests do not depend on the shared data.
const clip::Tokenizer& tokenizer() {
  static const clip::Tokenizer tok = [] {
    const std::string dir = make_scratch("vocab").string();
    std::vector<std::string> corpus = {"a photo of a cat", "a photo of a dog", "a picture of the ant",
                                       "a zebra and a dog", "caption number one", "the quick brown fox"};
    clip::text::BpeTrainOptions o;
    o.vocab_size = 600;
    clip::text::write_trained_bpe(clip::text::train_bpe(corpus, o), dir);
    return clip::Tokenizer::from_directory(dir);
  }();
  return tok;
}

// A w x h RGB image with a gradient, distinct per `seed` (crops and flips then change pixels).
clip::Image pattern(int w, int h, int seed) {
  clip::Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.mode = "RGB";
  im.pixels.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.pixels[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(seed * 37 + x * 9);
      p[1] = uint8_t(seed * 11 + y * 7);
      p[2] = uint8_t((x * y + seed * 5) & 255);
    }
  return im;
}

std::string png(const clip::Image& im) {
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = png_uint_32(im.width);
  pi.height = png_uint_32(im.height);
  pi.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&pi, nullptr, &size, 0, im.pixels.data(), 0, nullptr);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&pi, out.data(), &size, 0, im.pixels.data(), 0, nullptr)) return "";
  out.resize(size);
  return out;
}

std::string jpeg(const clip::Image& im) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = JDIMENSION(im.width);
  c.image_height = JDIMENSION(im.height);
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(&im.pixels[size_t(c.next_scanline) * im.width * 3]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::string out(reinterpret_cast<char*>(buf), size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

void write(const std::string& path, const std::string& bytes) { clip::write_file_atomic(path, bytes); }

using clip::test::TarWriter;

// `shards` tar files of `per` samples: key.jpg (or .png) + key.txt "caption <n>" + key.cls n%3.
std::string make_shards(const std::string& dir, int shards, int per, bool captions = true) {
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "/shard-%03d.tar", s);
    TarWriter t(dir + name);
    for (int k = 0; k < per; ++k) {
      const int n = s * per + k;
      char key_chars[32];
      std::snprintf(key_chars, sizeof key_chars, "s%d/%d", s, 1000 + k);
      const std::string key = key_chars;
      const clip::Image im = pattern(20 + n % 5, 18, n);
      if (n % 2)
        t.add(key + ".jpg", jpeg(im));
      else
        t.add(key + ".png", png(im));
      if (captions) t.add(key + ".txt", "caption " + std::to_string(n));
      t.add(key + ".cls", std::to_string(n % 3) + "\n");
      t.add(key + ".json", "{}");  // ignored, as img2dataset's metadata is
    }
  }
  char spec[64];
  std::snprintf(spec, sizeof spec, "/shard-{000..%03d}.tar", shards - 1);
  return dir + spec;
}

// A CSV "filepath,title" of n images (PNG/JPEG alternating) with captions "caption <i>".
std::string make_csv(const std::string& dir, int n, const std::string& name = "pairs.csv") {
  std::string csv = "filepath,title\n";
  for (int i = 0; i < n; ++i) {
    const std::string file = "img" + std::to_string(i) + (i % 2 ? ".jpg" : ".png");
    write(dir + "/" + file, i % 2 ? jpeg(pattern(24, 20, i)) : png(pattern(24, 20, i)));
    csv += file + ",\"caption " + std::to_string(i) + "\"\n";
  }
  write(dir + "/" + name, csv);
  return dir + "/" + name;
}

std::string make_folders(const std::string& dir, const std::vector<std::string>& classes, int per) {
  int n = 0;
  for (auto& c : classes) {
    fs::create_directories(dir + "/" + c);
    for (int i = 0; i < per; ++i) write(dir + "/" + c + "/" + std::to_string(i) + ".png", png(pattern(16, 16, n++)));
  }
  return dir;
}

LoaderOptions small(int64_t batch, int workers = 2) {
  LoaderOptions o;
  o.preprocess.image_size = 16;
  o.batch_size = batch;
  o.context_length = 16;
  o.workers = workers;
  o.prefetch_batches = 2;
  o.seed = 1234;
  return o;
}

void expect_same(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.end.epoch, b.end.epoch);
  EXPECT_EQ(a.end.samples, b.end.samples);
  ASSERT_EQ(a.pixels.size(), b.pixels.size());
  EXPECT_EQ(0, std::memcmp(a.pixels.data(), b.pixels.data(), a.pixels.size() * sizeof(float)));
}

std::vector<Batch> take(PairLoader& l, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(l.next());
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const clip::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(DataLoader, CsvPairsEvalTransform) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 6);
  auto o = small(3);
  o.augment = false;
  PairLoader l(csv, {}, tokenizer(), o);
  EXPECT_EQ(l.stats().epoch_size, 6);
  EXPECT_EQ(l.batches_per_epoch(), 2);
  EXPECT_TRUE(l.classnames().empty());
  std::set<std::string> seen;
  const size_t per = 3 * 16 * 16;
  for (int b = 0; b < 2; ++b) {
    Batch batch = l.next();
    ASSERT_EQ(batch.size, 3);
    ASSERT_EQ(batch.pixels.size(), 3 * per);
    ASSERT_EQ(batch.ids.size(), 3u * 16);
    for (int i = 0; i < 3; ++i) {
      const std::string& cap = batch.captions[size_t(i)];
      seen.insert(cap);
      EXPECT_EQ(batch.labels[size_t(i)], -1);
      const int n = std::stoi(cap.substr(8));
      // Pixels: exactly the evaluation transform of that row's image.
      const auto img = clip::decode_image_file(dir + "/img" + std::to_string(n) + (n % 2 ? ".jpg" : ".png"));
      std::vector<float> want(per);
      clip::preprocess_image(img, o.preprocess, want.data());
      EXPECT_EQ(0, std::memcmp(want.data(), batch.pixels.data() + i * per, per * sizeof(float))) << cap;
      const auto ids = tokenizer().tokenize({cap}, 16, true);
      EXPECT_TRUE(std::equal(ids.begin(), ids.end(), batch.ids.begin() + i * 16)) << cap;
    }
  }
  EXPECT_EQ(seen.size(), 6u);  // one epoch = every row once
  EXPECT_EQ(l.stats().delivered, 6);
}

TEST(DataLoader, TsvCustomKeysAndRowsSharingAnImage) {
  const std::string dir = scratch();
  write(dir + "/a.png", png(pattern(10, 10, 1)));
  write(dir + "/b.png", png(pattern(10, 10, 2)));
  // Tabs, a quoted caption with a tab and a quote, two rows for one image.
  write(dir + "/pairs.tsv", "id\timg\tcap\n1\ta.png\tfirst\n2\ta.png\t\"second\tone \"\"quoted\"\"\"\n3\tb.png\tthird\n");
  PairSourceOptions s;
  s.csv_img_key = "img";
  s.csv_caption_key = "cap";
  auto o = small(3);
  o.shuffle = false;
  PairLoader l(dir + "/pairs.tsv", s, tokenizer(), o);
  Batch b = l.next();
  EXPECT_EQ(b.captions, (std::vector<std::string>{"first", "second\tone \"quoted\"", "third"}));
  // The same file with an explicit separator and a .txt name.
  fs::copy_file(dir + "/pairs.tsv", dir + "/pairs.txt");
  s.csv_separator = '\t';
  PairLoader l2(dir + "/pairs.txt", s, tokenizer(), o);
  EXPECT_EQ(l2.next().captions, b.captions);
}

TEST(DataLoader, ClassFoldersWithTemplates) {
  const std::string dir = make_folders(scratch() + "/set", {"zebra", "ant"}, 3);
  PairSourceOptions s;
  s.templates = {"a photo of a {}.", "{} and {} again"};
  auto o = small(2);
  PairLoader l(dir, s, tokenizer(), o);
  EXPECT_EQ(l.classnames(), (std::vector<std::string>{"ant", "zebra"}));
  EXPECT_EQ(l.stats().epoch_size, 6);
  std::set<std::string> used;
  std::map<int, int> per_label;
  for (int b = 0; b < 12; ++b) {
    Batch batch = l.next();
    for (int i = 0; i < batch.size; ++i) {
      const int label = batch.labels[size_t(i)];
      ASSERT_TRUE(label == 0 || label == 1);
      const std::string& name = l.classnames()[size_t(label)];
      const std::string& cap = batch.captions[size_t(i)];
      EXPECT_TRUE(cap == "a photo of a " + name + "." || cap == name + " and " + name + " again") << cap;
      used.insert(cap.substr(0, 2));
      ++per_label[label];
    }
  }
  EXPECT_EQ(used.size(), 3u);  // both templates (and both classes) come up over 4 epochs
  EXPECT_EQ(per_label[0], 12);
  EXPECT_EQ(per_label[1], 12);

  // Class names can be overridden (e.g. CLIP's prompt names); too few is an error.
  s.classnames = {"tiny insect", "striped horse"};
  PairLoader l2(dir, s, tokenizer(), o);
  EXPECT_EQ(l2.classnames(), s.classnames);
  for (auto& c : l2.next().captions) EXPECT_TRUE(c.find("tiny insect") != std::string::npos ||
                                                 c.find("striped horse") != std::string::npos) << c;
  s.classnames = {"one"};
  EXPECT_NE(error_of([&] { PairLoader bad(dir, s, tokenizer(), o); }).find("1 class names given for 2 classes"),
            std::string::npos);
  // Labelled sets need templates.
  EXPECT_NE(error_of([&] { PairLoader bad(dir, {}, tokenizer(), o); }).find("templates"), std::string::npos);
}

TEST(DataLoader, LabelCsvAndIdx) {
  const std::string dir = scratch();
  // A labelled CSV as cifar10_jpeg/*_labels.csv: no caption column, a class column.
  make_folders(dir, {"cat", "dog"}, 2);
  write(dir + "/labels.csv", "path,label,class\ncat/0.png,0,cat\ncat/1.png,0,cat\ndog/0.png,1,dog\ndog/1.png,1,dog\n");
  PairSourceOptions s;
  s.csv_img_key = "path";
  s.templates = {"a {}"};
  auto o = small(4);
  PairLoader l(dir + "/labels.csv", s, tokenizer(), o);
  EXPECT_EQ(l.classnames(), (std::vector<std::string>{"cat", "dog"}));
  Batch b = l.next();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b.captions[size_t(i)], "a " + l.classnames()[size_t(b.labels[size_t(i)])]);

  // IDX: 5 images 6x4 and their labels, uncompressed.
  std::string images = {0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 6};
  std::string labels = {0, 0, 8, 1, 0, 0, 0, 5};
  for (int i = 0; i < 5; ++i) {
    for (int p = 0; p < 24; ++p) images += char(i * 40 + p);
    labels += char(i % 3);
  }
  write(dir + "/tiny-images-idx3-ubyte", images);
  write(dir + "/tiny-labels-idx1-ubyte", labels);
  s.templates = {"the number {}"};
  auto o2 = small(5);
  o2.shuffle = false;
  PairLoader idx(dir + "/tiny-images-idx3-ubyte", s, tokenizer(), o2);
  EXPECT_EQ(idx.classnames(), (std::vector<std::string>{"0", "1", "2"}));
  b = idx.next();
  EXPECT_EQ(b.labels, (std::vector<int>{0, 1, 2, 0, 1}));
  EXPECT_EQ(b.captions[2], "the number 2");
}

TEST(DataLoader, ShardsStreamedAndShuffled) {
  const std::string dir = scratch();
  const std::string spec = make_shards(dir, 3, 5);
  auto o = small(5);
  o.shuffle_buffer = 4;
  PairLoader l(spec, {}, tokenizer(), o);
  EXPECT_EQ(l.stats().epoch_size, -1);
  EXPECT_EQ(l.batches_per_epoch(), -1);
  std::vector<std::string> e0, e1;
  for (int b = 0; b < 6; ++b) {
    Batch batch = l.next();
    ASSERT_EQ(batch.size, 5);
    EXPECT_EQ(batch.end.epoch, b / 3);
    for (int i = 0; i < 5; ++i) {
      const std::string& cap = batch.captions[size_t(i)];
      const int n = std::stoi(cap.substr(8));
      EXPECT_EQ(batch.labels[size_t(i)], n % 3);  // .cls is kept with a caption
      (b < 3 ? e0 : e1).push_back(cap);
    }
  }
  EXPECT_EQ(std::set<std::string>(e0.begin(), e0.end()).size(), 15u);  // every sample once
  EXPECT_EQ(std::set<std::string>(e1.begin(), e1.end()).size(), 15u);
  EXPECT_NE(e0, e1);  // a new order each epoch

  // Unshuffled: the shards' own order.
  o.shuffle = false;
  PairLoader plain(spec, {}, tokenizer(), o);
  EXPECT_EQ(plain.next().captions,
            (std::vector<std::string>{"caption 0", "caption 1", "caption 2", "caption 3", "caption 4"}));

  // limit: the first samples in shard order, and then the epoch size is known.
  PairSourceOptions lim;
  lim.limit = 7;
  o.shuffle = true;
  PairLoader limited(spec, lim, tokenizer(), o);
  EXPECT_EQ(limited.stats().epoch_size, 7);
  std::set<std::string> got;
  for (auto& c : limited.next().captions) got.insert(c);
  Batch second = limited.next();
  EXPECT_EQ(second.end.epoch, 1);  // 7 samples: one batch of 5 per epoch, 2 dropped
  for (auto& c : got) EXPECT_LT(std::stoi(c.substr(8)), 7) << c;
}

TEST(DataLoader, LabelledShardsWithTemplates) {
  const std::string dir = scratch();
  const std::string spec = make_shards(dir, 2, 4, /*captions=*/false);
  PairSourceOptions s;
  EXPECT_NE(error_of([&] { PairLoader bad(spec, s, tokenizer(), small(4)); }).find("templates"), std::string::npos);
  s.templates = {"a photo of a {}."};
  s.classnames = {"cat", "dog", "ant"};
  PairLoader l(spec, s, tokenizer(), small(4));
  EXPECT_EQ(l.classnames(), s.classnames);
  for (int b = 0; b < 2; ++b) {
    Batch batch = l.next();
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(batch.captions[size_t(i)], "a photo of a " + s.classnames[size_t(batch.labels[size_t(i)])] + ".");
  }
}

TEST(DataLoader, SameBatchesWithAnyWorkerCount) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 10);
  const std::string shards = make_shards(dir, 3, 4);
  for (const std::string& spec : {csv, shards, csv + "::" + shards}) {
    auto o = small(4, 1);
    o.horizontal_flip = true;
    o.shuffle_buffer = 5;
    PairLoader one(spec, {}, tokenizer(), o);
    o.workers = 3;
    o.prefetch_batches = 1;
    PairLoader three(spec, {}, tokenizer(), o);
    o.workers = 0;  // synchronous, on the caller's thread
    PairLoader none(spec, {}, tokenizer(), o);
    for (int b = 0; b < 7; ++b) {  // crosses epoch ends
      SCOPED_TRACE(spec + " batch " + std::to_string(b));
      const Batch a = one.next();
      expect_same(a, three.next());
      expect_same(a, none.next());
    }
    // Another seed, another order.
    o.seed = 99;
    PairLoader other(spec, {}, tokenizer(), o);
    PairLoader again(spec, {}, tokenizer(), small(4, 1));
    EXPECT_NE(other.next().captions, again.next().captions);
  }
}

TEST(DataLoader, SeekResumesExactly) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 9);
  const std::string shards = make_shards(dir, 3, 5);
  for (const std::string& spec : {csv, shards, shards + "::" + csv}) {
    SCOPED_TRACE(spec);
    auto o = small(4);
    o.horizontal_flip = true;
    o.shuffle_buffer = 6;
    PairLoader a(spec, {}, tokenizer(), o);
    const auto first = take(a, 10);  // several epochs (9 or 15 or 24 samples per epoch)
    EXPECT_EQ(a.position().epoch, first[9].end.epoch);
    EXPECT_EQ(a.position().samples, first[9].end.samples);
    PairLoader b(spec, {}, tokenizer(), o);
    b.seek(first[4].end);
    for (int i = 5; i < 10; ++i) {
      SCOPED_TRACE(i);
      expect_same(first[size_t(i)], b.next());
    }
    // Seeking back in the same loader works too.
    a.seek(first[2].end);
    expect_same(first[3], a.next());
    // A position inside an epoch that is not a batch end.
    PairLoader c(spec, {}, tokenizer(), o);
    c.seek({1, 3});
    PairLoader d(spec, {}, tokenizer(), o);
    d.seek({1, 0});
    const Batch from_start = d.next();
    const Batch from_three = c.next();
    ASSERT_EQ(from_three.size, 4);
    EXPECT_EQ(std::vector<std::string>(from_three.captions.begin(), from_three.captions.begin() + 1),
              std::vector<std::string>(from_start.captions.begin() + 3, from_start.captions.begin() + 4));
  }
}

TEST(DataLoader, CorruptAndEmptySkippedCountedNeverFatal) {
  const std::string dir = scratch();
  for (int i = 0; i < 6; ++i) write(dir + "/ok" + std::to_string(i) + ".png", png(pattern(12, 12, i)));
  write(dir + "/broken.jpg", std::string("\xFF\xD8\xFF\xE0 this is not a jpeg", 24));
  std::string csv = "filepath,title\n";
  csv += "ok0.png,zero\nbroken.jpg,broken\nok1.png,\nok2.png,two\nmissing.png,gone\nok3.png,\"  \"\n";
  csv += "ok4.png,four\nok5.png,five\n";
  write(dir + "/pairs.csv", csv);
  auto o = small(2);
  o.shuffle = false;
  PairLoader l(dir + "/pairs.csv", {}, tokenizer(), o);
  Batch b1 = l.next(), b2 = l.next();
  EXPECT_EQ(b1.captions, (std::vector<std::string>{"zero", "two"}));
  EXPECT_EQ(b1.end.samples, 4);  // the skipped samples count in the position
  EXPECT_EQ(b2.captions, (std::vector<std::string>{"four", "five"}));
  EXPECT_EQ(b2.end.samples, 8);
  auto st = l.stats();
  EXPECT_EQ(st.skipped_corrupt, 2);  // broken.jpg, missing.png
  EXPECT_EQ(st.skipped_empty, 2);
  EXPECT_EQ(st.delivered, 4);
  // Resuming past them neither decodes nor counts them.
  PairLoader r(dir + "/pairs.csv", {}, tokenizer(), o);
  r.seek(b1.end);
  expect_same(b2, r.next());
  EXPECT_EQ(r.stats().skipped_corrupt, 1);  // missing.png only
  EXPECT_EQ(r.stats().skipped_empty, 1);

  // In a shard: a corrupt image, an empty caption, a key without an image, a bad .cls.
  {
    TarWriter t(dir + "/bad.tar");
    t.add("a.png", png(pattern(8, 8, 1)));
    t.add("a.txt", "good one");
    t.add("b.jpg", "garbage");
    t.add("b.txt", "corrupt image");
    t.add("c.png", png(pattern(8, 8, 2)));
    t.add("c.txt", " \n");
    t.add("d.txt", "no image");
    t.add("e.png", png(pattern(8, 8, 3)));
    t.add("e.txt", "bad class");
    t.add("e.cls", "cat");
    t.add("f.png", png(pattern(8, 8, 4)));
    t.add("f.txt", "good two");
  }
  PairLoader s(dir + "/bad.tar", {}, tokenizer(), o);
  Batch sb = s.next();
  EXPECT_EQ(sb.captions, (std::vector<std::string>{"good one", "good two"}));
  EXPECT_EQ(s.stats().skipped_corrupt, 3);
  EXPECT_EQ(s.stats().skipped_empty, 1);

  // Nothing usable at all: an error, not an endless loop.
  write(dir + "/allbad.csv", "filepath,title\nbroken.jpg,x\nok0.png,\n");
  PairLoader bad(dir + "/allbad.csv", {}, tokenizer(), o);
  EXPECT_NE(error_of([&] { bad.next(); }).find("fewer than a batch"), std::string::npos);
}

TEST(DataLoader, ErrorsNameTheFile) {
  const std::string dir = scratch();
  auto o = small(2);
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/nope.csv", {}, tokenizer(), o); }).find("nope.csv"), std::string::npos);
  write(dir + "/cols.csv", "image,caption\na.png,x\n");
  const std::string e = error_of([&] { PairLoader l(dir + "/cols.csv", {}, tokenizer(), o); });
  EXPECT_NE(e.find("cols.csv"), std::string::npos) << e;
  EXPECT_NE(e.find("\"filepath\""), std::string::npos) << e;
  EXPECT_NE(e.find("image, caption"), std::string::npos) << e;  // the columns it does have
  write(dir + "/header.csv", "filepath,title\n");
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/header.csv", {}, tokenizer(), o); }).find("header.csv: no rows"),
            std::string::npos);
  write(dir + "/short.csv", "filepath,title\na.png\n");
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/short.csv", {}, tokenizer(), o); })
                .find("short.csv: row 2 has 1 fields, fewer than the header's 2"),
            std::string::npos);
  write(dir + "/quote.csv", "filepath,title\na.png,\"open\n");
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/quote.csv", {}, tokenizer(), o); }).find("quote.csv:2"),
            std::string::npos);
  make_shards(dir, 2, 2);
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/shard-{000..002}.tar", {}, tokenizer(), o); }).find("shard-002.tar"),
            std::string::npos);
  write(dir + "/weird.bin", "x");
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/weird.bin", {}, tokenizer(), o); }).find("unknown source kind"),
            std::string::npos);
  // A shard that disappears after construction: the worker's error reaches next().
  {
    PairLoader gone(dir + "/shard-{000..001}.tar", {}, tokenizer(), small(4));
    fs::remove(dir + "/shard-001.tar");
    EXPECT_NE(error_of([&] { gone.next(); }).find("shard-001.tar"), std::string::npos);
  }
  // An empty shard: no samples.
  { TarWriter t(dir + "/empty.tar"); }
  PairLoader empty(dir + "/empty.tar", {}, tokenizer(), o);
  EXPECT_NE(error_of([&] { empty.next(); }).find("empty.tar: no samples"), std::string::npos);
  o.batch_size = 0;
  EXPECT_NE(error_of([&] { PairLoader l(dir + "/cols.csv", {}, tokenizer(), o); }).find("batch_size"), std::string::npos);
}

TEST(DataLoader, EpochBoundaries) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 7);
  auto o = small(3);
  o.shuffle = false;
  PairLoader l(csv, {}, tokenizer(), o);
  EXPECT_EQ(l.batches_per_epoch(), 2);
  const auto b = take(l, 5);
  // drop_last: 7 = 3 + 3 + (1 dropped); batches never straddle an epoch's end.
  const std::vector<std::pair<int64_t, int64_t>> ends = {{0, 3}, {0, 6}, {1, 3}, {1, 6}, {2, 3}};
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(b[i].end.epoch, ends[i].first) << i;
    EXPECT_EQ(b[i].end.samples, ends[i].second) << i;
  }
  EXPECT_EQ(b[2].captions, (std::vector<std::string>{"caption 0", "caption 1", "caption 2"}));
  // Without drop_last the remainder is a last, smaller batch.
  o.drop_last = false;
  PairLoader keep(csv, {}, tokenizer(), o);
  EXPECT_EQ(keep.batches_per_epoch(), 3);
  const auto k = take(keep, 4);
  EXPECT_EQ(k[2].size, 1);
  EXPECT_EQ(k[2].captions, std::vector<std::string>{"caption 6"});
  EXPECT_EQ(k[2].pixels.size(), 3u * 16 * 16);
  EXPECT_EQ(k[2].end.epoch, 1);
  EXPECT_EQ(k[2].end.samples, 0);
  EXPECT_EQ(k[3].captions, b[0].captions);
}

TEST(DataLoader, ConcatenatedSources) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 4);
  const std::string folders = make_folders(dir + "/set", {"ant", "bee"}, 2);
  const std::string shards = make_shards(dir, 2, 3);
  PairSourceOptions s;
  s.templates = {"a {}"};
  auto o = small(13);
  PairLoader l(csv + "::" + folders + "::" + shards, s, tokenizer(), o);
  EXPECT_EQ(l.classnames(), (std::vector<std::string>{"ant", "bee"}));
  EXPECT_EQ(l.stats().epoch_size, -1);
  for (int e = 0; e < 2; ++e) {
    Batch b = l.next();  // 4 + 4 + 6 = 14 samples: one batch of 13 per epoch
    EXPECT_EQ(b.end.epoch, e);
    int csv_rows = 0, shard_rows = 0, folder_rows = 0;
    for (size_t i = 0; i < b.captions.size(); ++i) {
      const std::string& c = b.captions[i];
      if (c == "a ant" || c == "a bee") {
        ++folder_rows;
        EXPECT_EQ(l.classnames()[size_t(b.labels[i])], c.substr(2));
      } else if (b.labels[i] == -1) {
        ++csv_rows;  // the CSV has no labels
      } else {
        ++shard_rows;  // the shards' .cls
      }
    }
    EXPECT_GE(csv_rows, 3);
    EXPECT_GE(folder_rows, 3);
    EXPECT_GE(shard_rows, 5);
    EXPECT_EQ(csv_rows + folder_rows + shard_rows, 13);
  }
}

TEST(DataLoader, AugmentationIsSeeded) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 4);
  auto o = small(4);
  o.shuffle = false;
  o.crop_scale_min = 0.3;
  PairLoader a(csv, {}, tokenizer(), o), b(csv, {}, tokenizer(), o);
  const Batch a0 = a.next(), a1 = a.next();
  expect_same(a0, b.next());
  EXPECT_EQ(a0.captions, a1.captions);
  EXPECT_NE(a0.pixels, a1.pixels);  // a new crop each epoch
  o.augment = false;
  PairLoader c(csv, {}, tokenizer(), o);
  const Batch c0 = c.next(), c1 = c.next();
  EXPECT_EQ(c0.pixels, c1.pixels);  // the evaluation transform is fixed
  EXPECT_NE(c0.pixels, a0.pixels);
}

TEST(DataLoader, PhotometricAugmentationIsSeededAndWorkerIndependent) {
  const std::string dir = scratch();
  const std::string csv = make_csv(dir, 8);
  auto o = small(4, 1);
  o.horizontal_flip = true;
  const Batch plain = PairLoader(csv, {}, tokenizer(), o).next();
  o.photometric.brightness = o.photometric.contrast = o.photometric.saturation = 0.4;
  o.photometric.grayscale_p = 0.3;
  o.photometric.blur_p = 0.5;
  o.photometric.blur_kernel = 3;
  o.photometric.noise_p = 0.5;
  PairLoader a(csv, {}, tokenizer(), o);
  o.workers = 3;
  PairLoader b(csv, {}, tokenizer(), o);
  for (int i = 0; i < 3; ++i) expect_same(a.next(), b.next());
  // The same crops and flips underneath (the photometric draws come after them), other pixels.
  const Batch first = PairLoader(csv, {}, tokenizer(), o).next();
  EXPECT_EQ(first.captions, plain.captions);
  EXPECT_NE(first.pixels, plain.pixels);
  // Out-of-range options name the flag.
  o.photometric.blur_kernel = 4;
  EXPECT_NE(error_of([&] { PairLoader(csv, {}, tokenizer(), o); }).find("blur-kernel"), std::string::npos);
  o.photometric.blur_kernel = 3;
  o.photometric.noise_p = 1.5;
  EXPECT_NE(error_of([&] { PairLoader(csv, {}, tokenizer(), o); }).find("noise-p"), std::string::npos);
}

TEST(DataLoader, RealCifar10TestFolder) {
  const std::string root = std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test";
  if (!fs::is_directory(root)) GTEST_FAIL() << "shared data not present";
  PairSourceOptions s;
  s.templates = {"a photo of a {}.", "a blurry photo of a {}.", "a low contrast photo of the {}."};
  auto o = small(32);
  o.preprocess.image_size = 32;
  o.horizontal_flip = true;
  PairLoader l(root, s, tokenizer(), o);
  const std::vector<std::string> classes = {"airplane", "automobile", "bird", "cat", "deer",
                                            "dog", "frog", "horse", "ship", "truck"};
  EXPECT_EQ(l.classnames(), classes);
  EXPECT_EQ(l.stats().epoch_size, 10000);
  EXPECT_EQ(l.batches_per_epoch(), 312);
  std::set<int> labels;
  for (int i = 0; i < 3; ++i) {
    Batch b = l.next();
    ASSERT_EQ(b.size, 32);
    for (int j = 0; j < 32; ++j) {
      const int label = b.labels[size_t(j)];
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      labels.insert(label);
      const std::string& name = classes[size_t(label)];
      const std::string& c = b.captions[size_t(j)];
      EXPECT_TRUE(c == "a photo of a " + name + "." || c == "a blurry photo of a " + name + "." ||
                  c == "a low contrast photo of the " + name + ".")
          << c;
    }
    // Normalised pixels of real photos: spread around zero, within CLIP's range.
    const auto [lo, hi] = std::minmax_element(b.pixels.begin(), b.pixels.end());
    EXPECT_LT(*lo, -1.0f);
    EXPECT_GT(*hi, 1.0f);
    EXPECT_GE(*lo, -1.8f);
    EXPECT_LE(*hi, 2.2f);
  }
  EXPECT_GE(labels.size(), 8u);  // shuffled: all classes mixed, not 96 airplanes
  EXPECT_EQ(l.stats().skipped_corrupt, 0);

  // The same set through its labels CSV (path,label,class): same class names and labels.
  const std::string csv = std::string(CLIP_SHARED_DATA) + "/cifar10_jpeg/test_labels.csv";
  s.csv_img_key = "path";
  o.shuffle = false;
  o.augment = false;
  s.limit = 64;
  PairLoader c(csv, s, tokenizer(), o);
  EXPECT_EQ(c.classnames(), classes);
  EXPECT_EQ(c.stats().epoch_size, 64);
  const Batch cb = c.next();
  EXPECT_EQ(cb.labels, std::vector<int>(32, 0));  // test/airplane/0000.jpg ... 0031.jpg
  std::vector<float> first(3 * 32 * 32);
  clip::preprocess_image(clip::decode_image_file(root + "/airplane/0000.jpg"), o.preprocess, first.data());
  EXPECT_EQ(std::vector<float>(cb.pixels.begin(), cb.pixels.begin() + 3 * 32 * 32), first);
}
