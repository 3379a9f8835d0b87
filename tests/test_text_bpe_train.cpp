// `clip tokenizer train`'s BPE training: deterministic, frequency-ordered merges, files that
// load in both formats with identical results, and a lossless round trip on the corpus.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/bpe_train.h"
#include "text/clean.h"
#include "text/tokenizer.h"

namespace {

const std::string kCaptions = std::string(CLIP_SHARED_DATA) + "/flickr8k_subset1000/flickr8k_all_captions.txt";

// What decode(encode(x)) must give for a lossless vocabulary: the cleaned, lowercased text's
// words, each followed by one space (decode turns every word's `</w>` into a space).
std::string words_of(const std::string& text) {
  std::string cleaned;
  clip::text::clean_and_lower(text, cleaned);
  std::vector<std::string_view> words;
  clip::text::split_words(cleaned, words);
  std::string out;
  for (auto w : words) (out += w) += ' ';
  return out;
}

std::string without_spaces(std::string s) {
  std::erase(s, ' ');
  return s;
}

TEST(BpeTrain, MergesFollowPairFrequency) {
  clip::text::BpeTrainOptions o;
  o.vocab_size = 514 + 3;
  o.min_pair_count = 1;
  const auto bpe = clip::text::train_bpe({"low lower lowest", "low low"}, o);
  ASSERT_EQ(bpe.merges.size(), 3u);
  EXPECT_EQ(bpe.merges[0], (std::pair<std::string, std::string>{"l", "o"}));  // 5 times
  EXPECT_EQ(bpe.merges[1], (std::pair<std::string, std::string>{"lo", "w</w>"}));  // 3 times
  EXPECT_EQ(bpe.merges[2], (std::pair<std::string, std::string>{"lo", "w"}));  // 2 times
  EXPECT_THROW(clip::text::train_bpe({"x"}, {.vocab_size = 100}), clip::Error);
}

TEST(BpeTrain, RoundTripOnFlickrCaptionsBothFormats) {
  std::vector<std::string> corpus = clip::text::read_corpus(kCaptions);
  ASSERT_EQ(corpus.size(), 40455u);
  EXPECT_EQ(corpus[0], "A child in a pink dress is climbing up a set of stairs in an entry way .");
  corpus.resize(2000);  // keep the test fast under sanitizers
  clip::text::BpeTrainOptions o;
  o.vocab_size = 2000;
  const auto bpe = clip::text::train_bpe(corpus, o);
  EXPECT_EQ(bpe.vocab_size(), 2000);
  EXPECT_EQ(clip::text::train_bpe(corpus, o).merges, bpe.merges);  // deterministic

  const std::string dir = std::string(CLIP_BINARY_DIR) + "/test_text_bpe_train_vocab";
  std::filesystem::remove_all(dir);
  clip::text::write_trained_bpe(bpe, dir);
  const auto gz = clip::Tokenizer::from_openai_bpe(dir + "/bpe_vocab.txt.gz");
  const auto hf = clip::Tokenizer::from_hf(dir + "/vocab.json", dir + "/merges.txt");
  const auto from_dir = clip::Tokenizer::from_directory(dir);
  EXPECT_EQ(gz.vocab_size(), 2000);
  EXPECT_EQ(hf.vocab_size(), 2000);
  EXPECT_EQ(gz.sot_token(), 1998);
  EXPECT_EQ(gz.eot_token(), 1999);

  size_t tokens = 0, bytes = 0;
  for (const std::string& caption : corpus) {
    const auto ids = gz.encode(caption);
    ASSERT_EQ(hf.encode(caption), ids) << caption;
    ASSERT_EQ(from_dir.encode(caption), ids) << caption;
    const std::string decoded = gz.decode(ids);
    ASSERT_EQ(decoded, words_of(caption)) << caption;
    ASSERT_EQ(without_spaces(decoded), without_spaces(clip::text::python_lower(clip::clean_text(caption)))) << caption;
    tokens += ids.size();
    bytes += caption.size();
  }
  // A vocabulary trained on the corpus compresses it: most words are one token.
  EXPECT_LT(tokens * 4, bytes);
  // Text outside the corpus still round-trips (byte fallback), non-ASCII included.
  for (const std::string s : {"zebra quagga xylophone", "Crème brûlée 東京 🐶", "a\xff\xfe"})
    EXPECT_EQ(gz.decode(gz.encode(s)), words_of(s)) << s;
}

TEST(BpeTrain, ReadCorpusPlainLines) {
  const std::string path = std::string(CLIP_BINARY_DIR) + "/test_text_bpe_train_plain.txt";
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_TRUE(f);
    std::fputs("first line\r\nsecond, with comma\nthird", f);
    std::fclose(f);
  }
  EXPECT_EQ(clip::text::read_corpus(path),
            (std::vector<std::string>{"first line", "second, with comma", "third"}));
  EXPECT_THROW(clip::text::read_corpus(path + ".missing"), clip::Error);
}

}  // namespace
