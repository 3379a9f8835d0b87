// BPE vocabulary training (see bpe_train.h).
#include "text/bpe_train.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/io.h"
#include "text/clean.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace clip::text {
namespace {

uint64_t pack(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t first_of(uint64_t p) { return static_cast<int32_t>(p >> 32); }
int32_t second_of(uint64_t p) { return static_cast<int32_t>(p & 0xffffffffu); }

std::string gzip_bytes(const std::string& data, const std::string& path) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw Error(path + ": zlib deflateInit2 failed");
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw Error(path + ": gzip compression failed");
  out.resize(zs.total_out);
  return out;
}

}  // namespace

TrainedBpe train_bpe(const std::vector<std::string>& corpus, const BpeTrainOptions& options) {
  const int target = options.vocab_size - 512 - 2;
  if (target < 0) throw Error("tokenizer train: vocabulary size " + std::to_string(options.vocab_size) +
                              " is below the 514 byte and special tokens");
  // 1. Word frequencies over CLIP's words (sorted map: the order is deterministic).
  std::map<std::string, int64_t> word_counts;
  {
    std::string cleaned;
    std::vector<std::string_view> words;
    for (const std::string& line : corpus) {
      clean_and_lower(line, cleaned);
      words.clear();
      split_words(cleaned, words);
      for (std::string_view w : words) {
        if (w == "<|startoftext|>" || w == "<|endoftext|>") continue;
        ++word_counts[std::string(w)];
      }
    }
  }
  if (word_counts.empty())
    throw Error("tokenizer train: the corpus has no words (" + std::to_string(corpus.size()) +
                " texts, all empty after cleaning): a vocabulary would hold bytes only");
  // 2. Symbols: 0..255 bytes in OpenAI's order, 256..511 the same with </w>.
  std::vector<std::string> tokens;
  std::unordered_set<std::string> token_set;
  std::array<int32_t, 256> byte_sym{};
  const auto& order = byte_symbol_order();
  for (size_t i = 0; i < 256; ++i) {
    std::string s;
    append_utf8(s, byte_to_unicode(order[i]));
    tokens.push_back(s);
    byte_sym[order[i]] = static_cast<int32_t>(i);
  }
  for (size_t i = 0; i < 256; ++i) tokens.push_back(tokens[i] + "</w>");
  token_set.insert(tokens.begin(), tokens.end());
  token_set.insert("<|startoftext|>");
  token_set.insert("<|endoftext|>");

  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [w, n] : word_counts) {
    std::vector<int32_t> sym;
    for (size_t i = 0; i + 1 < w.size(); ++i) sym.push_back(byte_sym[static_cast<uint8_t>(w[i])]);
    sym.push_back(byte_sym[static_cast<uint8_t>(w.back())] + 256);
    words.push_back(std::move(sym));
    freq.push_back(n);
  }

  // 3. Pair counts, the words each pair occurs in, and a max-heap with lazy deletion.
  std::unordered_map<uint64_t, int64_t> counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& s = words[wi];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t p = pack(s[i], s[i + 1]);
      counts[p] += freq[wi];
      auto& v = where[p];
      if (v.empty() || v.back() != static_cast<int32_t>(wi)) v.push_back(static_cast<int32_t>(wi));
    }
  }
  struct Candidate {
    int64_t count;
    uint64_t pair;
  };
  // Highest count first; ties: the pair whose (first, second) strings sort first.
  auto worse = [&tokens](const Candidate& x, const Candidate& y) {
    if (x.count != y.count) return x.count < y.count;
    const std::string& xa = tokens[first_of(x.pair)];
    const std::string& ya = tokens[first_of(y.pair)];
    if (xa != ya) return xa > ya;
    return tokens[second_of(x.pair)] > tokens[second_of(y.pair)];
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  for (const auto& [p, n] : counts) heap.push({n, p});

  TrainedBpe result;
  std::vector<int32_t> stamp(words.size(), -1);
  std::unordered_map<uint64_t, int64_t> delta;
  while (static_cast<int>(result.merges.size()) < target && !heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    auto cit = counts.find(top.pair);
    if (cit == counts.end() || cit->second != top.count) continue;  // stale entry
    if (top.count < options.min_pair_count) break;
    const int32_t a = first_of(top.pair), b = second_of(top.pair);
    std::string merged = tokens[a] + tokens[b];
    if (token_set.count(merged)) {  // same string from another split: never a duplicate token
      counts.erase(cit);
      continue;
    }
    const int32_t m = static_cast<int32_t>(tokens.size());
    tokens.push_back(merged);
    token_set.insert(std::move(merged));
    result.merges.emplace_back(tokens[a], tokens[b]);

    delta.clear();
    const int32_t merge_index = static_cast<int32_t>(result.merges.size());
    std::vector<int32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t wi : affected) {
      if (stamp[wi] == merge_index) continue;
      stamp[wi] = merge_index;
      auto& s = words[wi];
      const int64_t f = freq[wi];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size(); ++i)
        if (s[i] == a && s[i + 1] == b) has = true;
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[pack(s[i], s[i + 1])] -= f;
      size_t out = 0;
      for (size_t i = 0; i < s.size();) {
        if (s[i] == a && i + 1 < s.size() && s[i + 1] == b) {
          s[out++] = m;
          i += 2;
        } else {
          s[out++] = s[i++];
        }
      }
      s.resize(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t p = pack(s[i], s[i + 1]);
        delta[p] += f;
        if (s[i] == m || s[i + 1] == m) {
          auto& v = where[p];
          if (v.empty() || v.back() != wi) v.push_back(wi);
        }
      }
    }
    for (const auto& [p, d] : delta) {
      if (d == 0) continue;
      auto it = counts.find(p);
      if (it == counts.end()) {
        if (p == top.pair) continue;
        it = counts.emplace(p, 0).first;
      }
      it->second += d;
      if (it->second <= 0) {
        counts.erase(it);
      } else {
        heap.push({it->second, p});
      }
    }
    counts.erase(top.pair);
  }
  return result;
}

void write_trained_bpe(const TrainedBpe& bpe, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create directory: " + ec.message());
  std::string merges_txt = "#version: 0.2\n";
  std::string openai = "#version: 0.2 clip-merges: " + std::to_string(bpe.merges.size()) + "\n";
  for (const auto& [a, b] : bpe.merges) {
    merges_txt += a + " " + b + "\n";
    openai += a + " " + b + "\n";
  }
  const std::string gz_path = (fs::path(dir) / "bpe_vocab.txt.gz").string();
  write_file_atomic(gz_path, gzip_bytes(openai, gz_path));
  write_file_atomic((fs::path(dir) / "merges.txt").string(), merges_txt);
  // vocab.json: the same ids as the OpenAI layout (bytes, bytes</w>, merges, specials).
  nlohmann::json vocab = nlohmann::json::object();
  const auto& order = byte_symbol_order();
  int32_t id = 0;
  std::vector<std::string> base;
  for (uint8_t b : order) {
    std::string s;
    append_utf8(s, byte_to_unicode(b));
    base.push_back(s);
  }
  for (const auto& s : base) vocab[s] = id++;
  for (const auto& s : base) vocab[s + "</w>"] = id++;
  for (const auto& [a, b] : bpe.merges) vocab[a + b] = id++;
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  write_file_atomic((fs::path(dir) / "vocab.json").string(), vocab.dump() + "\n");
}

std::vector<std::string> read_corpus(const std::string& path) {
  const std::string data = read_text_file(path);
  std::vector<std::string> out;
  const bool csv = data.rfind("image,caption", 0) == 0;
  size_t pos = 0;
  if (csv) {
    pos = data.find('\n');
    pos = pos == std::string::npos ? data.size() : pos + 1;
  }
  while (pos < data.size()) {
    if (!csv) {
      size_t nl = data.find('\n', pos);
      if (nl == std::string::npos) nl = data.size();
      std::string line = data.substr(pos, nl - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      out.push_back(std::move(line));
      pos = nl + 1;
      continue;
    }
    // CSV record: fields separated by ',', a field in double quotes may hold ',', '\n', '""'.
    std::vector<std::string> fields(1);
    bool quoted = false;
    size_t i = pos;
    for (; i < data.size(); ++i) {
      const char c = data[i];
      if (quoted) {
        if (c == '"') {
          if (i + 1 < data.size() && data[i + 1] == '"') {
            fields.back().push_back('"');
            ++i;
          } else {
            quoted = false;
          }
        } else {
          fields.back().push_back(c);
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        fields.emplace_back();
      } else if (c == '\n') {
        break;
      } else if (c != '\r') {
        fields.back().push_back(c);
      }
    }
    pos = i + 1;
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    if (fields.size() < 2) throw Error(path + ": CSV record without a caption column: '" + fields[0].substr(0, 80) + "'");
    // The caption is everything after the first field (an unquoted caption may hold commas).
    std::string caption = fields[1];
    for (size_t f = 2; f < fields.size(); ++f) caption += "," + fields[f];
    out.push_back(std::move(caption));
  }
  return out;
}

}  // namespace clip::text
