// CLIP's BPE tokenizer (see tokenizer.h and docs/tokenizer.md).
#include "text/tokenizer.h"

#include <utf8proc.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <unordered_map>

#include "core/error.h"
#include "core/io.h"
#include "text/utf8.h"
#include "text/vocabulary.h"

namespace clip {
namespace text {
namespace {

struct ByteTables {
  std::array<char32_t, 256> to_unicode{};
  std::vector<uint8_t> order;  // OpenAI's bs list: printable bytes first, then the rest
  std::array<int16_t, 512> from_unicode;  // stand-ins are below U+0200; -1: not a stand-in
  ByteTables() {
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    for (int b = 0; b < 256; ++b)
      if (printable[b]) {
        order.push_back(static_cast<uint8_t>(b));
        to_unicode[b] = static_cast<char32_t>(b);
      }
    int n = 0;
    for (int b = 0; b < 256; ++b)
      if (!printable[b]) {
        order.push_back(static_cast<uint8_t>(b));
        to_unicode[b] = static_cast<char32_t>(256 + n++);
      }
    from_unicode.fill(-1);
    for (int b = 0; b < 256; ++b) from_unicode[to_unicode[b]] = static_cast<int16_t>(b);
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

enum class CharClass : uint8_t { kSpace, kLetter, kNumber, kOther, kNone };

struct AsciiClasses {
  std::array<CharClass, 128> c{};
  AsciiClasses() {
    for (int i = 0; i < 128; ++i) {
      if ((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z')) c[i] = CharClass::kLetter;
      else if (i >= '0' && i <= '9') c[i] = CharClass::kNumber;
      else if (i == ' ' || (i >= 9 && i <= 13)) c[i] = CharClass::kSpace;
      else c[i] = CharClass::kOther;
    }
  }
};
const AsciiClasses kAscii;

CharClass classify(char32_t c) {
  if (c < 0x80) return kAscii.c[c];
  if (c == 0x345) return CharClass::kNone;  // matches no alternative under IGNORECASE (folds to ι)
  if (is_python_space(c)) return CharClass::kSpace;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return CharClass::kNumber;
    default:
      return CharClass::kOther;
  }
}

// Case-insensitive match of an ASCII lowercase literal at text[i]; under the regex module's
// simple case folding U+017F LATIN SMALL LETTER LONG S also matches 's'.
size_t match_literal(std::string_view text, size_t i, std::string_view literal) {
  const size_t start = i;
  for (char l : literal) {
    if (i < text.size() && text[i] == l) {
      ++i;
    } else if (l == 's' && i + 1 < text.size() && text[i] == '\xC5' && text[i + 1] == '\xBF') {
      i += 2;
    } else {
      return 0;
    }
  }
  return i - start;
}

}  // namespace

char32_t byte_to_unicode(uint8_t b) { return byte_tables().to_unicode[b]; }
const std::vector<uint8_t>& byte_symbol_order() { return byte_tables().order; }

void split_words(std::string_view text, std::vector<std::string_view>& out) {
  const size_t n = text.size();
  size_t i = 0;
  auto class_at = [&](size_t pos, size_t& next) {
    const auto b = static_cast<unsigned char>(text[pos]);
    if (b < 0x80) {
      next = pos + 1;
      return kAscii.c[b];
    }
    next = pos;
    return classify(next_codepoint(text, next));
  };
  while (i < n) {
    const char ch = text[i];
    if (ch == '<') {
      size_t len = match_literal(text, i, "<|startoftext|>");
      if (!len) len = match_literal(text, i, "<|endoftext|>");
      if (len) {
        out.push_back(text.substr(i, len));
        i += len;
        continue;
      }
    } else if (ch == '\'') {
      size_t len = 0;
      for (std::string_view c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
        if ((len = match_literal(text, i, c))) break;
      if (len) {
        out.push_back(text.substr(i, len));
        i += len;
        continue;
      }
    }
    size_t next;
    const CharClass cls = class_at(i, next);
    if (cls == CharClass::kSpace || cls == CharClass::kNone) {
      i = next;
      continue;
    }
    if (cls == CharClass::kNumber) {
      out.push_back(text.substr(i, next - i));
      i = next;
      continue;
    }
    size_t end = next;
    while (end < n) {
      size_t after;
      if (class_at(end, after) != cls) break;
      end = after;
    }
    out.push_back(text.substr(i, end - i));
    i = end;
  }
}

}  // namespace text

// ---- vocabulary ----

namespace {
// Open-addressing map from a symbol pair to (rank, merged symbol).
class PairTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Later insertions of the same pair win (as Python's dict(zip(merges, range(...))) does).
  void insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    const uint64_t key = pack(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = {key, rank, merged};
        return;
      }
    }
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = pack(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (s.size() * 0xff51afd7ed558ccdULL);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t k;
    std::memcpy(&k, p, 8);
    h = (h ^ k) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t k = 0;
  std::memcpy(&k, p, n);
  h = (h ^ k) * 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return static_cast<size_t>(hash_bytes(s)); }
};
}  // namespace

struct Tokenizer::Vocab {
  std::string source;
  std::vector<std::string> tokens;       // id -> token string (byte-unicode form)
  std::vector<std::string> token_bytes;  // id -> the bytes it stands for ("</w>" kept literally)
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids;
  std::array<int32_t, 256> byte_id{};      // byte b as an inner symbol
  std::array<int32_t, 256> byte_end_id{};  // byte b as a word's last symbol (with </w>)
  PairTable merges;
  int num_merges = 0;
  int32_t sot = -1, eot = -1;

  int32_t id_of(const std::string& token, const std::string& what) const {
    auto it = ids.find(token);
    if (it == ids.end()) throw Error(source + ": " + what + " '" + token + "' is not in the vocabulary");
    return it->second;
  }

  // Fills ids, token_bytes, byte ids and specials from `tokens`; checks it is complete.
  void index() {
    const auto& bt = text::byte_tables();
    ids.clear();
    ids.reserve(tokens.size() * 2);
    token_bytes.resize(tokens.size());
    for (size_t id = 0; id < tokens.size(); ++id) {
      ids[tokens[id]] = static_cast<int32_t>(id);  // a repeated string maps to its last id
      std::string& bytes = token_bytes[id];
      bytes.clear();
      const std::string& t = tokens[id];
      for (size_t i = 0; i < t.size();) {
        const char32_t c = text::next_codepoint(t, i);
        const int byte = c < bt.from_unicode.size() ? bt.from_unicode[c] : -1;
        if (byte < 0)
          throw Error(source + ": token " + std::to_string(id) + " '" + t +
                      "' holds a character outside GPT-2's byte-to-unicode table");
        bytes.push_back(static_cast<char>(byte));
      }
    }
    std::string sym;
    for (int b = 0; b < 256; ++b) {
      sym.clear();
      text::append_utf8(sym, bt.to_unicode[b]);
      byte_id[b] = id_of(sym, "byte symbol");
      byte_end_id[b] = id_of(sym + "</w>", "byte symbol");
    }
    sot = id_of("<|startoftext|>", "special token");
    eot = id_of("<|endoftext|>", "special token");
  }

  void add_merges(const std::vector<std::pair<std::string, std::string>>& pairs) {
    merges.reserve(pairs.size() + 1);
    num_merges = static_cast<int>(pairs.size());
    for (size_t r = 0; r < pairs.size(); ++r) {
      const auto& [a, b] = pairs[r];
      const std::string where = "merge " + std::to_string(r + 1);
      merges.insert(id_of(a, where + " part"), id_of(b, where + " part"), static_cast<int32_t>(r),
                    id_of(a + b, where + " result"));
    }
  }
};

// Shared, bounded, thread-safe cache: word bytes -> BPE ids. Sharded so that threads rarely
// meet on one lock; a shard that reaches its bound is emptied (bounded memory, no LRU upkeep).
struct Tokenizer::WordCache {
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxWordsPerShard = 1 << 14;  // 262,144 words in all
  static constexpr size_t kMaxWordBytes = 128;           // longer words are not cached
  struct alignas(64) Shard {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
  };
  std::array<Shard, kShards> shards;

  static size_t shard_of(std::string_view w) { return (hash_bytes(w) >> 56) % kShards; }

  // Appends the cached ids of `word` to `out`; false if absent.
  bool lookup(std::string_view word, std::vector<int32_t>& out) {
    Shard& s = shards[shard_of(word)];
    std::shared_lock lock(s.mutex);
    auto it = s.words.find(word);
    if (it == s.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(std::string_view word, const int32_t* ids, size_t n) {
    if (word.size() > kMaxWordBytes) return;
    Shard& s = shards[shard_of(word)];
    std::unique_lock lock(s.mutex);
    if (s.words.size() >= kMaxWordsPerShard) s.words.clear();
    s.words.try_emplace(std::string(word), ids, ids + n);
  }
  size_t size() {
    size_t n = 0;
    for (auto& s : shards) {
      std::shared_lock lock(s.mutex);
      n += s.words.size();
    }
    return n;
  }
  void clear() {
    for (auto& s : shards) {
      std::unique_lock lock(s.mutex);
      s.words.clear();
    }
  }
};

namespace {

// BPE of one word as simple_tokenizer.bpe: repeatedly take the lowest-ranked adjacent pair and
// merge all its non-overlapping occurrences left to right, until no pair has a rank.
void bpe_word(const Tokenizer::Vocab& v, std::string_view word, std::vector<int32_t>& sym) {
  sym.clear();
  for (size_t i = 0; i + 1 < word.size(); ++i) sym.push_back(v.byte_id[static_cast<uint8_t>(word[i])]);
  sym.push_back(v.byte_end_id[static_cast<uint8_t>(word.back())]);
  while (sym.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    int32_t first = 0, second = 0, merged = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto* e = v.merges.find(sym[i], sym[i + 1]);
      if (e && e->rank < best_rank) {
        best_rank = e->rank;
        first = sym[i];
        second = sym[i + 1];
        merged = e->merged;
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    size_t out = 0;
    for (size_t i = 0; i < sym.size();) {
      if (sym[i] == first && i + 1 < sym.size() && sym[i + 1] == second) {
        sym[out++] = merged;
        i += 2;
      } else {
        sym[out++] = sym[i++];
      }
    }
    sym.resize(out);
  }
}

std::shared_ptr<Tokenizer::Vocab> openai_vocab(std::string source,
                                                const std::vector<std::pair<std::string, std::string>>& merges) {
  auto v = std::make_shared<Tokenizer::Vocab>();
  v->source = std::move(source);
  const auto& bt = text::byte_tables();
  for (uint8_t b : bt.order) {
    std::string s;
    text::append_utf8(s, bt.to_unicode[b]);
    v->tokens.push_back(s);
  }
  for (int i = 0; i < 256; ++i) v->tokens.push_back(v->tokens[i] + "</w>");
  for (const auto& [a, b] : merges) v->tokens.push_back(a + b);
  v->tokens.push_back("<|startoftext|>");
  v->tokens.push_back("<|endoftext|>");
  v->index();
  v->add_merges(merges);
  return v;
}

std::string_view trim_cr(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
  return line;
}

// "a b" -> {a, b}; Python's str.split() on a merge line.
std::pair<std::string, std::string> parse_merge(std::string_view line, const std::string& file, size_t lineno) {
  line = trim_cr(line);
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0 || line.find(' ', sp + 1) != std::string_view::npos ||
      sp + 1 == line.size())
    throw Error(file + ": line " + std::to_string(lineno) + " is not a merge \"a b\": '" + std::string(line.substr(0, 80)) + "'");
  return {std::string(line.substr(0, sp)), std::string(line.substr(sp + 1))};
}

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw Error(path + ": gzip read error: " + msg);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const Vocab> vocab)
    : vocab_(std::move(vocab)), cache_(std::make_shared<WordCache>()) {}

Tokenizer Tokenizer::from_openai_bpe(const std::string& gz_path) {
  const std::string data = read_gzip(gz_path);
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos <= data.size();) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    lines.push_back(std::string_view(data).substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (lines.empty() || lines[0].find("#version") == std::string_view::npos)
    throw Error(gz_path + ": not a BPE merges file (no '#version' header line)");
  // OpenAI's tokenizer uses lines 1..48894 (49152 - 256 - 2 ids); a file written by
  // `clip tokenizer train` names its own count in the header.
  size_t count = 49152 - 256 - 2;
  const size_t tag = lines[0].find("clip-merges:");
  if (tag != std::string_view::npos) count = std::strtoul(std::string(lines[0].substr(tag + 12)).c_str(), nullptr, 10);
  std::vector<std::pair<std::string, std::string>> merges;
  for (size_t i = 1; i < lines.size() && merges.size() < count; ++i) {
    if (trim_cr(lines[i]).empty() && i + 1 >= lines.size()) break;  // final newline
    merges.push_back(parse_merge(lines[i], gz_path, i + 1));
  }
  if (tag != std::string_view::npos && merges.size() != count)
    throw Error(gz_path + ": header names " + std::to_string(count) + " merges but the file has " +
                std::to_string(merges.size()));
  return Tokenizer(openai_vocab(gz_path, merges));
}

Tokenizer Tokenizer::from_hf(const std::string& vocab_json, const std::string& merges_txt) {
  auto v = std::make_shared<Vocab>();
  v->source = vocab_json;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(vocab_json));
  } catch (const nlohmann::json::exception& e) {
    throw Error(vocab_json + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(vocab_json + ": expected an object mapping tokens to ids");
  v->tokens.assign(j.size(), std::string());
  std::vector<bool> seen(j.size(), false);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer()) throw Error(vocab_json + ": id of '" + it.key() + "' is not an integer");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(j.size()) || seen[id])
      throw Error(vocab_json + ": ids must be 0.." + std::to_string(j.size() - 1) + " each once; '" + it.key() +
                  "' has " + std::to_string(id));
    seen[id] = true;
    v->tokens[id] = it.key();
  }
  v->index();
  const std::string text = read_text_file(merges_txt);
  std::vector<std::pair<std::string, std::string>> merges;
  size_t lineno = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string_view line = trim_cr(std::string_view(text).substr(pos, nl - pos));
    ++lineno;
    pos = nl + 1;
    if (lineno == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    merges.push_back(parse_merge(line, merges_txt, lineno));
  }
  v->source = merges_txt;
  v->add_merges(merges);
  v->source = vocab_json;
  return Tokenizer(v);
}

Tokenizer Tokenizer::from_directory(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw Error(dir + ": not a directory");
  return load_tokenizer(dir);  // text/vocabulary: the one rule for which files make a tokenizer
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  thread_local std::string cleaned;
  thread_local std::vector<std::string_view> words;
  thread_local std::vector<int32_t> symbols;
  text::clean_and_lower(text, cleaned);
  words.clear();
  text::split_words(cleaned, words);
  std::vector<int32_t> ids;
  ids.reserve(words.size() + 4);
  const Vocab& v = *vocab_;
  for (std::string_view w : words) {
    if (w.front() == '<') {
      if (w == "<|startoftext|>") {
        ids.push_back(v.sot);
        continue;
      }
      if (w == "<|endoftext|>") {
        ids.push_back(v.eot);
        continue;
      }
    }
    if (w.size() == 1) {  // a single byte is its own end symbol; no merge can apply
      ids.push_back(v.byte_end_id[static_cast<uint8_t>(w[0])]);
      continue;
    }
    if (cache_->lookup(w, ids)) continue;
    bpe_word(v, w, symbols);
    ids.insert(ids.end(), symbols.begin(), symbols.end());
    cache_->insert(w, symbols.data(), symbols.size());
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Vocab& v = *vocab_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(v.tokens.size()))
      throw Error("decode: token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                  std::to_string(v.tokens.size() - 1) + ")");
    bytes += v.token_bytes[id];
  }
  const std::string utf8 = text::sanitize_utf8(bytes);
  std::string out;
  out.reserve(utf8.size());
  for (size_t i = 0; i < utf8.size();) {
    if (utf8.compare(i, 4, "</w>") == 0) {
      out.push_back(' ');
      i += 4;
    } else {
      out.push_back(utf8[i++]);
    }
  }
  return out;
}

std::vector<int32_t> Tokenizer::tokenize(const std::vector<std::string>& texts, int context_length,
                                         bool truncate, std::vector<int64_t>* truncated) const {
  if (context_length < 1) throw Error("tokenize: context length must be at least 1, got " + std::to_string(context_length));
  const size_t ctx = static_cast<size_t>(context_length);
  std::vector<int32_t> result(texts.size() * ctx, 0);
  for (size_t t = 0; t < texts.size(); ++t) {
    std::vector<int32_t> ids = encode(texts[t]);
    ids.insert(ids.begin(), vocab_->sot);
    ids.push_back(vocab_->eot);
    if (ids.size() > ctx) {
      if (!truncate) {
        std::string shown = texts[t].size() > 100 ? texts[t].substr(0, 100) + "..." : texts[t];
        throw Error("tokenize: input " + std::to_string(t) + " \"" + text::sanitize_utf8(shown) + "\" is " +
                    std::to_string(ids.size()) + " tokens with start and end, too long for context length " +
                    std::to_string(context_length) + " (--truncate / truncate=true cuts it)");
      }
      if (truncated) truncated->push_back(int64_t(t));
      ids.resize(ctx);
      ids.back() = vocab_->eot;
    }
    std::copy(ids.begin(), ids.end(), result.begin() + static_cast<ptrdiff_t>(t * ctx));
  }
  return result;
}

int32_t Tokenizer::sot_token() const { return vocab_->sot; }
int32_t Tokenizer::eot_token() const { return vocab_->eot; }
int Tokenizer::vocab_size() const { return static_cast<int>(vocab_->tokens.size()); }
int Tokenizer::num_merges() const { return vocab_->num_merges; }
const std::string& Tokenizer::token_string(int32_t id) const {
  if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " is outside the vocabulary");
  return vocab_->tokens[id];
}
size_t Tokenizer::cache_size() const { return cache_->size(); }
void Tokenizer::clear_cache() const { cache_->clear(); }

}  // namespace clip
