#pragma once
// Training a CLIP-style BPE vocabulary from a caption corpus, so models trained here can ship
// their own: the words are CLIP's (cleaned, lowercased, split by CLIP's pattern); symbols start
// as the 256 GPT-2 byte symbols and the same 256 with `</w>`; each step merges the most frequent
// adjacent pair (ties: the pair whose token strings sort first), never a pair whose merged
// string is already a token. The result is written in OpenAI's .txt.gz format and as
// Hugging Face vocab.json + merges.txt, and loads with clip::Tokenizer.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace clip::text {

struct BpeTrainOptions {
  int vocab_size = 49408;  // 512 byte symbols + merges + 2 special tokens
  int64_t min_pair_count = 2;  // stop early when no pair occurs this often
};

struct TrainedBpe {
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order, byte-unicode form
  int vocab_size() const { return 512 + static_cast<int>(merges.size()) + 2; }
};

TrainedBpe train_bpe(const std::vector<std::string>& corpus, const BpeTrainOptions& options);

// Writes `<dir>/bpe_vocab.txt.gz` (OpenAI format, header names the merge count) and
// `<dir>/vocab.json` + `<dir>/merges.txt` (Hugging Face); creates dir if needed. Atomic writes.
void write_trained_bpe(const TrainedBpe& bpe, const std::string& dir);

// Lines of a corpus file: one text per line, or the `caption` column of a CSV whose header is
// `image,caption` (RFC 4180 quoting, as Flickr8k's captions.txt). Invalid UTF-8 is kept as is
// (the tokenizer replaces it).
std::vector<std::string> read_corpus(const std::string& path);

}  // namespace clip::text
