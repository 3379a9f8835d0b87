// The .npy + .tsv rows of `clip embed` (core/embeddings_file.h): a round trip keeps every byte of
// the sources (tabs, newlines, backslashes), and each malformed sidecar is a clip::Error naming
// the file and the line.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/embeddings_file.h"
#include "core/error.h"
#include "core/io.h"

namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(CLIP_BINARY_DIR) + "/test_tmp/core_embeddings_file";

std::string error_of(const std::string& tsv, int64_t rows) {
  std::vector<std::string> k, s;
  try {
    clip::parse_embedding_sidecar(tsv, "x.tsv", rows, k, s);
  } catch (const clip::Error& e) {
    return e.what();
  }
  return "";
}

TEST(EmbeddingsFile, RoundTripKeepsEverySource) {
  fs::create_directories(kDir);
  clip::EmbeddingRows r;
  r.rows = 3;
  r.cols = 2;
  r.data = {1, 2, 3, 4, 5, 6};
  r.kinds = {"image", "text", "text"};
  r.sources = {"dir\\with\ttab.png", "two\nlines\r", "back\\slash \\t literal"};
  const std::string npy = kDir + "/rows.npy";
  clip::write_embedding_rows(npy, r);
  EXPECT_EQ(clip::read_text_file(kDir + "/rows.tsv"),
            "row\tkind\tsource\n0\timage\tdir\\\\with\\ttab.png\n1\ttext\ttwo\\nlines\\r\n"
            "2\ttext\tback\\\\slash \\\\t literal\n");
  const clip::EmbeddingRows back = clip::read_embedding_rows(npy);
  EXPECT_EQ(back.rows, 3);
  EXPECT_EQ(back.cols, 2);
  EXPECT_EQ(back.data, r.data);
  EXPECT_EQ(back.kinds, r.kinds);
  EXPECT_EQ(back.sources, r.sources);
}

TEST(EmbeddingsFile, MalformedSidecarsAreClearErrors) {
  EXPECT_NE(error_of("", 0).find("x.tsv: empty"), std::string::npos);
  EXPECT_NE(error_of("row,kind,source\n", 0).find("x.tsv:1: expected the header"), std::string::npos);
  EXPECT_NE(error_of("row\tkind\tsource\n0\timage\n", 1).find("x.tsv:2: expected row, kind and source"),
            std::string::npos);
  EXPECT_NE(error_of("row\tkind\tsource\n1\timage\ta\n", 1).find("x.tsv:2: row number \"1\", expected 0"),
            std::string::npos);
  EXPECT_NE(error_of("row\tkind\tsource\n0\tvideo\ta\n", 1).find("kind \"video\""), std::string::npos);
  EXPECT_NE(error_of("row\tkind\tsource\n0\timage\ta\n", 2).find("names 1 rows but its .npy holds 2"),
            std::string::npos);
  EXPECT_NE(error_of("row\tkind\tsource\n0\timage\ta\n1\ttext\tb\n", 1).find("names more rows"), std::string::npos);
  EXPECT_EQ(error_of("row\tkind\tsource\r\n0\timage\ta\r\n", 1), "");  // CRLF written by another tool
  fs::create_directories(kDir);
  const std::vector<float> v(4, 0.f);
  clip::write_npy_f32(kDir + "/alone.npy", v.data(), {2, 2});
  fs::remove(kDir + "/alone.tsv");
  try {
    clip::read_embedding_rows(kDir + "/alone.npy");
    FAIL() << "no error without the sidecar";
  } catch (const clip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("alone.tsv beside it"), std::string::npos) << e.what();
  }
}

}  // namespace
