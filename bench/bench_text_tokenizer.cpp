// Tokenizer speed on one core over all 40,455 Flickr8k captions (docs/benchmarks/tokenizer.md):
// cold = a fresh word cache for every pass, warm = the cache already holds every word.
// Run: taskset -c 1 build/bench/bench_text_tokenizer --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "text/bpe_train.h"
#include "text/tokenizer.h"

namespace {

const std::vector<std::string>& captions() {
  static const std::vector<std::string> c =
      clip::text::read_corpus(std::string(CLIP_SHARED_DATA) + "/flickr8k_subset1000/flickr8k_all_captions.txt");
  return c;
}

const clip::Tokenizer& tokenizer() {
  static const clip::Tokenizer t =
      clip::Tokenizer::from_openai_bpe(std::string(CLIP_SHARED_DATA) + "/clip_vocab/bpe_simple_vocab_16e6.txt.gz");
  return t;
}

size_t encode_all(const clip::Tokenizer& tok) {
  size_t n = 0;
  for (const std::string& c : captions()) n += tok.encode(c).size();
  return n;
}

void report(benchmark::State& state, size_t tokens_per_pass) {
  state.counters["tokens"] = static_cast<double>(tokens_per_pass);
  state.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(tokens_per_pass), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["captions_per_second"] =
      benchmark::Counter(static_cast<double>(captions().size()), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_EncodeFlickrCold(benchmark::State& state) {
  const clip::Tokenizer& tok = tokenizer();
  size_t tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    tok.clear_cache();
    state.ResumeTiming();
    tokens = encode_all(tok);
  }
  report(state, tokens);
}
BENCHMARK(BM_EncodeFlickrCold)->Unit(benchmark::kMillisecond);

void BM_EncodeFlickrWarm(benchmark::State& state) {
  const clip::Tokenizer& tok = tokenizer();
  size_t tokens = encode_all(tok);
  for (auto _ : state) tokens = encode_all(tok);
  report(state, tokens);
}
BENCHMARK(BM_EncodeFlickrWarm)->Unit(benchmark::kMillisecond);

// The model's input: [40455, 77] rows with start/end tokens and padding, warm cache.
void BM_TokenizeFlickrBatchWarm(benchmark::State& state) {
  const clip::Tokenizer& tok = tokenizer();
  size_t tokens = encode_all(tok);
  for (auto _ : state) benchmark::DoNotOptimize(tok.tokenize(captions(), 77, true));
  report(state, tokens);
}
BENCHMARK(BM_TokenizeFlickrBatchWarm)->Unit(benchmark::kMillisecond);

// Non-ASCII text takes the full cleaning path (ftfy fixes, NFC, html.unescape, lowercasing).
void BM_EncodeNonAscii(benchmark::State& state) {
  const clip::Tokenizer& tok = tokenizer();
  const std::vector<std::string> texts = {"Crème brûlée à la carte &amp; café", "一只猫坐在沙发上",
                                          "Ελληνικά: ΟΔΟΣ και ΣΟΦΙΑ", "the dog’s ﬁsh ＬＯＵＤ　ＮＯＩＳＥＳ"};
  size_t n = 0;
  for (auto _ : state)
    for (const auto& t : texts) n += tok.encode(t).size();
  state.counters["texts_per_second"] =
      benchmark::Counter(static_cast<double>(texts.size()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_EncodeNonAscii);

}  // namespace

BENCHMARK_MAIN();
