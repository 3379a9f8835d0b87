// `clip index` and `clip search` end to end with the shipped model on real photos: the ranking
// equals a brute-force ranking of `clip embed`'s output (same top-K, scores within 1e-5), by text,
// by image and by weighted terms; indexing is incremental (unchanged files are not read, moves
// and duplicates are not encoded, deletions drop out, changed files are re-encoded); bad files
// are skipped; another model is refused; Ctrl-C keeps the batches done and a re-run completes
// to the same index as an uninterrupted run.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/io.h"
#include "search/index_db.h"
#include "search/indexer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using clip::test::CliRun;
using nlohmann::json;

namespace {

const std::string kModel = std::string(CLIP_SOURCE_DIR) + "/models/cifar10-vit-tiny";
const std::string kShared = CLIP_SHARED_DATA;
const std::string kTmp = std::string(CLIP_BINARY_DIR) + "/test_tmp/app_search";

CliRun clip_cmd(const std::string& args) { return clip::test::run_clip(args, kTmp); }

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
  return v;
}

// 60 CIFAR-10 test images (6 per class) and the sample photos, in sub-folders.
std::string photo_folder(const std::string& name) {
  const std::string dir = kTmp + "/" + name;
  fs::remove_all(dir);
  for (const auto& cls : fs::directory_iterator(kShared + "/cifar10_jpeg/test")) {
    fs::create_directories(dir + "/cifar/" + cls.path().filename().string());
    for (int i = 0; i < 6; ++i) {
      char f[16];
      std::snprintf(f, sizeof f, "%04d.jpg", i);
      fs::copy_file(cls.path() / f, fs::path(dir) / "cifar" / cls.path().filename() / f);
    }
  }
  fs::create_directories(dir + "/photos");
  for (const char* p : {"skimage/chelsea.png", "skimage/coffee.png", "skimage/astronaut.png", "skimage/horse.png"})
    fs::copy_file(kShared + "/sample_photos/" + p, dir + "/photos/" + fs::path(p).filename().string());
  return dir;
}

struct Rows {
  std::vector<std::string> paths;
  std::vector<float> data;  // [n, dim]
  int dim = 0;
};

// What `clip embed` writes for these files (and texts), split into images and texts.
Rows embed(const std::string& args, const std::string& out) {
  CliRun r = clip_cmd("embed -m " + kModel + " " + args + " -o " + out);
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<int64_t> shape;
  Rows rows;
  rows.data = clip::read_npy_f32(out, shape);
  rows.dim = int(shape[1]);
  std::istringstream tsv(clip::read_text_file(fs::path(out).replace_extension(".tsv").string()));
  std::string line;
  std::getline(tsv, line);
  while (std::getline(tsv, line)) rows.paths.push_back(line.substr(line.find('\t', line.find('\t') + 1) + 1));
  return rows;
}

// Brute force: scores of every image row against `q`, best first (ties by path).
std::vector<std::pair<std::string, float>> rank(const Rows& images, size_t n_images, const std::vector<float>& q) {
  std::vector<std::pair<std::string, float>> s;
  for (size_t i = 0; i < n_images; ++i) {
    double d = 0;
    for (int j = 0; j < images.dim; ++j) d += double(images.data[i * size_t(images.dim) + size_t(j)]) * q[size_t(j)];
    s.push_back({fs::absolute(images.paths[i]).lexically_normal().string(), float(d)});
  }
  std::stable_sort(s.begin(), s.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return s;
}

void expect_same_ranking(const std::vector<json>& hits, const std::vector<std::pair<std::string, float>>& want,
                         size_t k) {
  ASSERT_EQ(hits.size(), k);
  for (size_t i = 0; i < k; ++i) {
    EXPECT_EQ(hits[i]["rank"].get<int>(), int(i) + 1);
    EXPECT_NEAR(hits[i]["score"].get<double>(), want[i].second, 1e-5) << i;
    // Equal scores may come in either order: compare the path only where the score is unique.
    const bool tie = (i > 0 && std::abs(want[i - 1].second - want[i].second) < 1e-6) ||
                     (i + 1 < want.size() && std::abs(want[i + 1].second - want[i].second) < 1e-6);
    if (!tie) EXPECT_EQ(hits[i]["path"].get<std::string>(), want[i].first) << i;
  }
}

class Search : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kShared + "/cifar10_jpeg/test")) << "shared data not found at " << kShared;
    ASSERT_TRUE(fs::exists(std::string(CLIP_BINARY_DIR) + "/clip"));
    fs::create_directories(kTmp);
  }
};

TEST_F(Search, RankingEqualsBruteForceOfEmbedByTextImageAndWeightedTerms) {
  const std::string dir = photo_folder("ranked");
  const std::string db = kTmp + "/ranked.db";
  fs::remove(db);
  CliRun r = clip_cmd("index -m " + kModel + " --db " + db + " " + dir + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json counts = json::parse(r.out);
  EXPECT_EQ(counts["found"].get<int>(), 64);
  EXPECT_EQ(counts["added"].get<int>() + counts["duplicates"].get<int>(), 64);
  EXPECT_EQ(counts["total"].get<int>(), 64);

  const Rows rows = embed(dir + " --text 'a photo of a dog' --text 'a photo of a ship' --text snow", kTmp + "/ranked.npy");
  ASSERT_EQ(rows.paths.size(), 67u);
  const size_t n = 64;
  auto row = [&](size_t i) {
    return std::vector<float>(rows.data.begin() + long(i * size_t(rows.dim)), rows.data.begin() + long((i + 1) * size_t(rows.dim)));
  };
  // Text.
  CliRun s = clip_cmd("search --db " + db + " 'a photo of a dog' -n 10 --json");
  ASSERT_EQ(s.status, 0) << s.err;
  expect_same_ranking(json_lines(s.out), rank(rows, n, row(64)), 10);
  // An example image: itself first, with cosine 1.
  const std::string example = dir + "/photos/chelsea.png";
  s = clip_cmd("search --db " + db + " --image " + example + " -n 5 --json");
  ASSERT_EQ(s.status, 0) << s.err;
  const auto img_hits = json_lines(s.out);
  const size_t chelsea = size_t(std::find(rows.paths.begin(), rows.paths.end(), example) - rows.paths.begin());
  ASSERT_LT(chelsea, n);
  expect_same_ranking(img_hits, rank(rows, n, row(chelsea)), 5);
  EXPECT_EQ(img_hits[0]["path"], example);
  EXPECT_NEAR(img_hits[0]["score"].get<double>(), 1.0, 1e-5);
  // Weighted terms: normalize(1 * dog + 2 * ship - snow).
  s = clip_cmd("search --db " + db + " 'a photo of a dog' --add '2:a photo of a ship' --subtract snow -n 10 --json");
  ASSERT_EQ(s.status, 0) << s.err;
  std::vector<float> q(size_t(rows.dim));
  double norm = 0;
  for (int j = 0; j < rows.dim; ++j) {
    q[size_t(j)] = row(64)[size_t(j)] + 2 * row(65)[size_t(j)] - row(66)[size_t(j)];
    norm += double(q[size_t(j)]) * q[size_t(j)];
  }
  for (float& v : q) v = float(v / std::sqrt(norm));
  expect_same_ranking(json_lines(s.out), rank(rows, n, q), 10);
  // A threshold cuts the list; the plain output shows rank, score and path.
  s = clip_cmd("search --db " + db + " 'a photo of a dog' -n 64 --threshold 0.3 --json");
  for (const json& h : json_lines(s.out)) EXPECT_GE(h["score"].get<double>(), 0.3);
  s = clip_cmd("search --db " + db + " 'a photo of a dog' -n 1");
  EXPECT_NE(s.out.find("  1  0."), std::string::npos) << s.out;
  // The approximate index answers too (here, with 64 vectors, exactly).
  s = clip_cmd("search --db " + db + " 'a photo of a dog' -n 10 --json --index-type hnsw");
  ASSERT_EQ(s.status, 0) << s.err;
  expect_same_ranking(json_lines(s.out), rank(rows, n, row(64)), 10);
  s = clip_cmd("search --db " + db + " 'a photo of a dog' -n 10 --json --index-type hnsw --ef-search 64");
  ASSERT_EQ(s.status, 0) << s.err;
  expect_same_ranking(json_lines(s.out), rank(rows, n, row(64)), 10);
  EXPECT_EQ(clip_cmd("search --db " + db + " dog --index-type hnsw --ef-search 0").status, 2);  // out of range
}

TEST_F(Search, IndexingIsIncrementalAndFindsMovesDuplicatesAndDeletions) {
  const std::string dir = photo_folder("incremental");
  const std::string db = kTmp + "/incremental.db";
  fs::remove(db);
  auto index = [&](const std::string& extra = "") {
    CliRun r = clip_cmd("index -m " + kModel + " --db " + db + " " + dir + " --json" + extra);
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? json::parse(r.out.substr(0, r.out.find('\n'))) : json();
  };
  json c = index();
  EXPECT_EQ(c["total"].get<int>(), 64);
  // Hidden folders, @eaDir and node_modules are not indexed.
  fs::create_directories(dir + "/.thumbs");
  fs::create_directories(dir + "/@eaDir");
  fs::copy_file(dir + "/photos/coffee.png", dir + "/.thumbs/t.png");
  fs::copy_file(dir + "/photos/coffee.png", dir + "/@eaDir/t.png");
  c = index();
  EXPECT_EQ(c["unchanged"].get<int>(), 64);
  EXPECT_EQ(c["added"].get<int>() + c["changed"].get<int>() + c["moved"].get<int>() + c["duplicates"].get<int>(), 0);
  EXPECT_EQ(c["encode_seconds"].get<double>(), 0.0);
  // A move (same bytes, new path), a copy (a duplicate), a deletion, a changed file, a broken file.
  fs::rename(dir + "/photos/horse.png", dir + "/photos/renamed_horse.png");
  fs::copy_file(dir + "/photos/chelsea.png", dir + "/photos/chelsea_copy.png");
  fs::remove(dir + "/cifar/cat/0000.jpg");
  fs::copy_file(dir + "/photos/astronaut.png", dir + "/cifar/dog/0001.jpg", fs::copy_options::overwrite_existing);
  clip::write_file_atomic(dir + "/photos/broken.jpg", std::string("\xff\xd8\xff\xe0 not really", 15));
  fs::copy_file(kShared + "/cifar10_jpeg/test/ship/0100.jpg", dir + "/cifar/dog/0002.jpg", fs::copy_options::overwrite_existing);
  CliRun r = clip_cmd("index --db " + db + " " + dir + " --json");  // the model recorded in the index
  ASSERT_EQ(r.status, 0) << r.err;
  c = json::parse(r.out);
  EXPECT_EQ(c["moved"].get<int>(), 1);
  EXPECT_EQ(c["duplicates"].get<int>(), 2);  // the copy of chelsea, and astronaut's bytes at dog/0001.jpg
  EXPECT_EQ(c["changed"].get<int>(), 1);  // new bytes at dog/0002.jpg
  EXPECT_EQ(c["removed"].get<int>(), 1);
  EXPECT_EQ(c["skipped"].get<int>(), 1);
  EXPECT_EQ(c["total"].get<int>(), 64);  // 64 + the copy - the deleted one
  EXPECT_NE(r.err.find("warning: skipped " + dir + "/photos/broken.jpg"), std::string::npos) << r.err;
  // The database agrees with the files, and each row's vector is the one embed computes.
  clip::search::IndexDb idb = clip::search::IndexDb::open(db, false);
  std::map<std::string, std::vector<float>> stored;
  for (auto& rec : idb.all_records(true)) stored[rec.path] = rec.vector;
  EXPECT_TRUE(stored.count(dir + "/photos/renamed_horse.png"));
  EXPECT_FALSE(stored.count(dir + "/photos/horse.png"));
  EXPECT_FALSE(stored.count(dir + "/cifar/cat/0000.jpg"));
  const Rows rows = embed(dir + "/photos/renamed_horse.png " + dir + "/cifar/dog/0001.jpg " + dir +
                              "/photos/chelsea_copy.png " + dir + "/cifar/dog/0002.jpg",
                          kTmp + "/incremental.npy");
  for (size_t i = 0; i < 4; ++i) {
    const auto& v = stored[fs::absolute(rows.paths[i]).lexically_normal().string()];
    ASSERT_EQ(v.size(), size_t(rows.dim)) << rows.paths[i];
    for (int j = 0; j < rows.dim; ++j) EXPECT_NEAR(v[size_t(j)], rows.data[i * size_t(rows.dim) + size_t(j)], 1e-6);
  }
  // --strict stops at the broken file; another model is refused.
  r = clip_cmd("index --db " + db + " " + dir + "/photos --strict");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("broken.jpg"), std::string::npos) << r.err;
  const std::string other = kTmp + "/other_model";
  if (!fs::exists(other + "/hf/model.safetensors"))
    (void)std::system((std::string(CLIP_PYTHON) + " " + CLIP_SOURCE_DIR +
                       "/tools/reference_model.py write --config tiny-vocab --schemes hf --out " + other + " > /dev/null 2>&1")
                          .c_str());
  r = clip_cmd("index -m " + other + "/hf --db " + db + " " + dir);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("holds embeddings of another model"), std::string::npos) << r.err;
  r = clip_cmd("search --db " + db + " -m " + other + "/hf dog");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("indexed with another model"), std::string::npos) << r.err;
  // Errors: no database, an empty query.
  EXPECT_EQ(clip_cmd("search --db " + kTmp + "/missing.db dog").status, 2);  // CLI11: file does not exist
  EXPECT_EQ(clip_cmd("search --db " + db).status, 1);
}

// File lists (.txt, relative to the list's folder) and image,caption CSVs are inputs too; a
// missing input is an error before any work.
TEST_F(Search, ListsAndCsvFilesAreInputs) {
  const std::string dir = photo_folder("lists");
  clip::write_file_atomic(dir + "/list.txt", std::string("photos/chelsea.png\ncifar/cat/0001.jpg\n\n"));
  clip::write_file_atomic(dir + "/pairs.csv", "filepath,title\n" + dir + "/photos/horse.png,a horse\n" + dir +
                                                  "/cifar/ship/0002.jpg,a ship\n" + dir + "/photos/chelsea.png,a cat\n");
  const std::string db = kTmp + "/lists.db";
  fs::remove(db);
  CliRun r = clip_cmd("index -m " + kModel + " --db " + db + " " + dir + "/list.txt " + dir + "/pairs.csv --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json c = json::parse(r.out);
  EXPECT_EQ(c["found"].get<int>(), 4);  // chelsea is listed twice
  EXPECT_EQ(c["total"].get<int>(), 4);
  clip::search::IndexDb d = clip::search::IndexDb::open(db, false);
  EXPECT_TRUE(d.find_path(dir + "/cifar/cat/0001.jpg"));
  EXPECT_TRUE(d.find_path(dir + "/photos/horse.png"));
  r = clip_cmd("index -m " + kModel + " --db " + db + " " + dir + "/no-such-folder");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no-such-folder: no such file or folder"), std::string::npos) << r.err;
}

// WebDataset shards (tar archives, plain or gzip-compressed; brace notation for several) are
// inputs: their image members are indexed as "<shard>/<member>", with the vectors `clip embed`
// gives the same images as files; re-indexing unchanged shards encodes nothing; a member gone
// from a rewritten shard drops out; the member's bytes come back for thumbnails; a damaged
// shard is an error naming it.
TEST_F(Search, WebDatasetShardsAreInputs) {
  const std::string dir = kTmp + "/wds";
  fs::remove_all(dir);
  fs::create_directories(dir + "/src");
  const std::vector<std::pair<std::string, std::string>> members = {
      {"000000.jpg", kShared + "/cifar10_jpeg/test/cat/0000.jpg"},
      {"000001.jpg", kShared + "/cifar10_jpeg/test/ship/0001.jpg"},
      {"000002.png", kShared + "/sample_photos/skimage/chelsea.png"},
      {"000003.png", kShared + "/sample_photos/skimage/coffee.png"},
      {"000004.jpg", kShared + "/cifar10_jpeg/test/dog/0002.jpg"}};
  for (const auto& [name, from] : members) fs::copy_file(from, dir + "/src/" + name);
  clip::write_file_atomic(dir + "/src/000000.txt", std::string("a cat"));
  auto tar = [&](const std::string& out, const std::string& flags, const std::string& names) {
    ASSERT_EQ(std::system(("tar " + flags + " " + out + " -C " + dir + "/src " + names).c_str()), 0);
  };
  tar(dir + "/shard-000.tar", "-cf", "000000.jpg 000000.txt 000001.jpg 000002.png");
  tar(dir + "/shard-001.tar", "-czf", "000003.png 000004.jpg");  // gzip-compressed, named .tar
  const std::string db = kTmp + "/wds.db";
  fs::remove(db);
  CliRun r = clip_cmd("index -m " + kModel + " --db " + db + " '" + dir + "/shard-{000..001}.tar' --json");
  ASSERT_EQ(r.status, 0) << r.err;
  json c = json::parse(r.out);
  EXPECT_EQ(c["found"].get<int>(), 5);  // the .txt caption is not an image
  EXPECT_EQ(c["added"].get<int>(), 5);
  // Each member's vector is embed's for the same image as a file.
  std::string files;
  for (const auto& m : members) files += " " + dir + "/src/" + m.first;
  const Rows rows = embed(files, kTmp + "/wds.npy");
  clip::search::IndexDb idb = clip::search::IndexDb::open(db, false);
  std::map<std::string, std::vector<float>> stored;
  for (auto& rec : idb.all_records(true)) stored[rec.path] = rec.vector;
  ASSERT_EQ(stored.size(), 5u);
  for (size_t i = 0; i < members.size(); ++i) {
    const std::string shard = dir + (i < 3 ? "/shard-000.tar/" : "/shard-001.tar/");
    const auto& v = stored[shard + members[i].first];
    ASSERT_EQ(v.size(), size_t(rows.dim)) << members[i].first;
    for (int j = 0; j < rows.dim; ++j) EXPECT_NEAR(v[size_t(j)], rows.data[i * size_t(rows.dim) + size_t(j)], 1e-6);
    // The bytes for a thumbnail are the member's.
    EXPECT_EQ(clip::search::read_indexed_image(shard + members[i].first), clip::read_text_file(members[i].second));
  }
  r = clip_cmd("search --db " + db + " 'a photo of a cat' -n 5 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json_lines(r.out).size(), 5u);
  // Unchanged shards: nothing read or encoded.
  r = clip_cmd("index --db " + db + " " + dir + "/shard-000.tar " + dir + "/shard-001.tar --json");
  ASSERT_EQ(r.status, 0) << r.err;
  c = json::parse(r.out);
  EXPECT_EQ(c["unchanged"].get<int>(), 5);
  EXPECT_EQ(c["encode_seconds"].get<double>(), 0.0);
  // shard-001 rewritten without 000004.jpg: that member drops out.
  fs::remove(dir + "/shard-001.tar");
  tar(dir + "/shard-001.tar", "-czf", "000003.png");
  r = clip_cmd("index --db " + db + " " + dir + "/shard-000.tar " + dir + "/shard-001.tar --json");
  ASSERT_EQ(r.status, 0) << r.err;
  c = json::parse(r.out);
  EXPECT_EQ(c["removed"].get<int>(), 1);
  EXPECT_EQ(c["total"].get<int>(), 4);
  // A damaged shard is an error naming it.
  const std::string whole = clip::read_text_file(dir + "/shard-000.tar");
  clip::write_file_atomic(dir + "/broken.tar", whole.substr(0, 700) + std::string(600, '\x7f'));
  r = clip_cmd("index --db " + db + " " + dir + "/broken.tar");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(dir + "/broken.tar"), std::string::npos) << r.err;
}

// SIGINT at the 3rd batch: exit 130, the first batches committed, and a re-run gives the same
// index (paths and vectors) as an uninterrupted one, with nothing stored twice.
TEST_F(Search, InterruptedIndexingResumesToTheSameIndex) {
  const std::string dir = photo_folder("interrupted");
  const std::string full = kTmp + "/full.db", cut = kTmp + "/cut.db";
  fs::remove(full);
  fs::remove(cut);
  ASSERT_EQ(clip_cmd("index -m " + kModel + " --db " + full + " " + dir + " -b 8").status, 0);
  // The same run, interrupted through the test point before the 3rd batch's commit.
  const std::string cmd = "env CLIP_TEST_SIGNAL_AT=index_batch:3 " + std::string(CLIP_BINARY_DIR) + "/clip index -m " +
                          kModel + " --db " + cut + "x " + dir + " -b 8 2>" + kTmp + "/cut.err";
  fs::remove(cut + "x");
  int64_t done = 0;
  const int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130) << clip::read_text_file(kTmp + "/cut.err");
  {
    clip::search::IndexDb d = clip::search::IndexDb::open(cut + "x", false);
    // Whole batches of 8 only: at least the three begun before the signal was seen.
    done = d.count();
    EXPECT_GE(done, 24);
    EXPECT_LT(done, 64);
    EXPECT_EQ(done % 8, 0);
  }
  CliRun r = clip_cmd("index --db " + cut + "x " + dir + " -b 8 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["unchanged"].get<int64_t>(), done);
  clip::search::IndexDb a = clip::search::IndexDb::open(full, false), b = clip::search::IndexDb::open(cut + "x", false);
  std::map<std::string, std::vector<float>> va, vb;
  for (auto& rec : a.all_records(true)) va[rec.path] = rec.vector;
  for (auto& rec : b.all_records(true)) vb[rec.path] = rec.vector;
  EXPECT_EQ(va, vb);
  EXPECT_EQ(b.count(), 64);
}

}  // namespace
