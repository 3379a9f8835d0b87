#pragma once
// CLIP's byte-level BPE tokenizer, exactly as OpenAI's clip/simple_tokenizer.py (see
// docs/tokenizer.md): cleaning (ftfy fixes, html unescape x2, whitespace) and lowercasing,
// CLIP's pre-tokenizer pattern, GPT-2's byte<->unicode table, `</w>` on a word's last symbol,
// merges applied by rank. Copies are cheap (shared immutable vocabulary and a shared, bounded,
// thread-safe word cache); every const member is safe to call from many threads at once.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "clean.h"  // relative: also installed under include/clip/text/

namespace clip {

class Tokenizer {
 public:
  // OpenAI's `bpe_simple_vocab_16e6.txt.gz` (gzip): line 0 is a header, then merges
  // "a b"; the first 48,894 are used (or as many as a header "clip-merges: N" names).
  static Tokenizer from_openai_bpe(const std::string& gz_path);
  // Hugging Face `vocab.json` (token -> id) and `merges.txt` ("#version" header, CRLF or LF).
  static Tokenizer from_hf(const std::string& vocab_json, const std::string& merges_txt);
  // A model directory: vocab.json + merges.txt, else one *.txt.gz (bpe_simple_vocab_16e6.txt.gz
  // preferred); clip::Error naming the directory if it has none.
  static Tokenizer from_directory(const std::string& dir);

  // Cleaned and lowercased text -> BPE ids, without start/end tokens.
  std::vector<int32_t> encode(std::string_view text) const;
  // The reference's decode: token strings joined, bytes decoded as UTF-8 with errors="replace",
  // "</w>" -> " ". Unknown ids throw clip::Error.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Row-major [texts.size(), context_length]: start, BPE ids, end, zero padding. A text that
  // does not fit throws clip::Error naming it and its length, unless `truncate`, which keeps
  // the first context_length tokens and sets the last to the end token (as clip.tokenize).
  // `truncated` (optional) receives the indices of the texts that were cut.
  std::vector<int32_t> tokenize(const std::vector<std::string>& texts, int context_length = 77,
                                bool truncate = false, std::vector<int64_t>* truncated = nullptr) const;

  int32_t sot_token() const;
  int32_t eot_token() const;
  int vocab_size() const;

  // The token string of an id (GPT-2 byte-unicode form, e.g. "hello</w>").
  const std::string& token_string(int32_t id) const;
  // Number of merges in use.
  int num_merges() const;
  // Words held in the shared cache now (for tests and benchmarks) and dropping them.
  size_t cache_size() const;
  void clear_cache() const;

  struct Vocab;
  struct WordCache;

 private:
  Tokenizer(std::shared_ptr<const Vocab> vocab);
  std::shared_ptr<const Vocab> vocab_;
  std::shared_ptr<WordCache> cache_;
};

namespace text {

// GPT-2's bytes_to_unicode(): byte -> code point of its printable stand-in, and the order in
// which OpenAI lists the 256 byte symbols (vocabulary ids 0..255).
char32_t byte_to_unicode(uint8_t b);
const std::vector<uint8_t>& byte_symbol_order();

// CLIP's pre-tokenizer on cleaned, lowercased, valid UTF-8: appends to `out` each match of
// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
// (regex module, IGNORECASE), in order. `out` is not cleared.
void split_words(std::string_view text, std::vector<std::string_view>& out);

}  // namespace text
}  // namespace clip
