// libFuzzer target: arbitrary bytes through the tokenizer's cleaning, encode, decode and
// tokenize. Invariants: no crash or sanitizer report; ids inside the vocabulary; decode gives
// valid UTF-8; invalid UTF-8 encodes exactly as its U+FFFD-replaced form; arbitrary ids decode
// or throw clip::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/clean.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace {
const clip::Tokenizer& tokenizer() {
  static const clip::Tokenizer t = clip::Tokenizer::from_openai_bpe(std::string(CLIP_SHARED_DATA) +
                                                                    "/clip_vocab/bpe_simple_vocab_16e6.txt.gz");
  return t;
}
bool valid_utf8(const std::string& s) { return clip::text::sanitize_utf8(s) == s; }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const clip::Tokenizer& tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tok.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  if (!valid_utf8(tok.decode(ids))) std::abort();
  if (tok.encode(clip::text::sanitize_utf8(text)) != ids) std::abort();
  if (!valid_utf8(clip::clean_text(text))) std::abort();
  const std::vector<int32_t> rows = tok.tokenize({text}, 77, true);
  if (rows.size() != 77 || rows[0] != tok.sot_token()) std::abort();
  // The same bytes read as token ids.
  std::vector<int32_t> raw(size / 2);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = (data[2 * i] | (data[2 * i + 1] << 8)) % 49500;
  try {
    if (!valid_utf8(tok.decode(raw))) std::abort();
  } catch (const clip::Error&) {
    // ids past the vocabulary are reported, never read
  }
  return 0;
}
