// Training loader throughput (src/data/loader.h), samples per second delivered in full
// batches, with 1 and 2 decoding workers:
//   * Cifar10Folders: the 10,000 CIFAR-10 test JPEGs as class folders, 32 px, captions from
//     CIFAR's 18 CLIP templates, random resized crop + flip (the CIFAR-10 training recipe);
//   * Flickr224Csv: the 1,000 Flickr8k photos (5,000 image-caption rows) through a CSV, 224 px,
//     random resized crop (open_clip's training transform);
//   * Flickr224Shards: the same pairs in WebDataset tar shards (streamed, shuffle buffer 1,000).
// The loader is built (folder scan, CSV parse, shards written) outside the timed loop; the
// loop only calls next(), so it measures the steady state of the pipeline. Needs the shared
// data (../shared/data); cases without it are skipped.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/io.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "text/tokenizer.h"
#include "tar_writer.h"  // tests/: shard writing shared with the data tests

namespace fs = std::filesystem;
using namespace clip::data;

namespace {

const std::string kShared = CLIP_SHARED_DATA;

const clip::Tokenizer* tokenizer() {
  static std::unique_ptr<clip::Tokenizer> tok = [] {
    const std::string gz = kShared + "/clip_vocab/bpe_simple_vocab_16e6.txt.gz";
    return fs::exists(gz) ? std::make_unique<clip::Tokenizer>(clip::Tokenizer::from_openai_bpe(gz)) : nullptr;
  }();
  return tok.get();
}

std::string scratch() {
  static const std::string d = [] {
    const fs::path p = fs::temp_directory_path() / ("clip_bench_data_loader." + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

// Flickr8k's captions.txt (image,caption; bare file names) as an open_clip CSV with absolute
// paths, and as two tar shards of key.jpg + key.txt (one caption per sample, the first).
struct Flickr {
  std::string csv, shards;
};
const Flickr* flickr() {
  static std::unique_ptr<Flickr> f = []() -> std::unique_ptr<Flickr> {
    const std::string dir = kShared + "/flickr8k_subset1000";
    if (!fs::exists(dir + "/captions.txt")) return nullptr;
    auto rows = parse_csv(clip::read_text_file(dir + "/captions.txt"), "captions.txt");
    auto out = std::make_unique<Flickr>();
    std::string csv = "filepath,title\n";
    std::vector<std::pair<std::string, std::string>> firsts;
    for (size_t r = 1; r < rows.size(); ++r) {
      std::string cap = rows[r][1];
      for (size_t p = 0; (p = cap.find('"', p)) != std::string::npos; p += 2) cap.insert(p, 1, '"');
      csv += dir + "/images/" + rows[r][0] + ",\"" + cap + "\"\n";
      if (firsts.empty() || firsts.back().first != rows[r][0]) firsts.emplace_back(rows[r][0], rows[r][1]);
    }
    out->csv = scratch() + "/flickr.csv";
    clip::write_file_atomic(out->csv, csv);
    for (int s = 0; s < 2; ++s) {
      clip::test::TarWriter tar(scratch() + "/flickr-" + std::to_string(s) + ".tar");
      for (size_t i = size_t(s); i < firsts.size(); i += 2) {
        const std::string key = fs::path(firsts[i].first).stem().string();
        tar.add(key + ".jpg", clip::read_file(dir + "/images/" + firsts[i].first));
        tar.add(key + ".txt", firsts[i].second);
      }
    }
    out->shards = scratch() + "/flickr-{0..1}.tar";
    return out;
  }();
  return f.get();
}

void run(benchmark::State& state, const std::string& spec, const PairSourceOptions& src, LoaderOptions o) {
  if (!tokenizer()) {
    state.SkipWithError("shared data not present");
    return;
  }
  o.workers = int(state.range(0));
  PairLoader loader(spec, src, *tokenizer(), o);
  loader.next();  // fill the pipeline (and a shard's shuffle buffer) before timing
  int64_t samples = 0;
  for (auto _ : state) {
    Batch b = loader.next();
    benchmark::DoNotOptimize(b.pixels.data());
    samples += b.size;
  }
  state.SetItemsProcessed(samples);
  const auto st = loader.stats();
  state.counters["skipped"] = double(st.skipped_corrupt + st.skipped_empty);
}

void Cifar10Folders(benchmark::State& state) {
  const std::string root = kShared + "/cifar10_jpeg/test";
  if (!fs::is_directory(root)) {
    state.SkipWithError("shared data not present");
    return;
  }
  PairSourceOptions src;
  // CLIP's 18 CIFAR-10 templates (openai/CLIP data/prompts.md).
  for (const char* t : {"a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
                        "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
                        "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
                        "a blurry photo of the {}.", "a black and white photo of the {}.",
                        "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
                        "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}."})
    src.templates.push_back(t);
  LoaderOptions o;
  o.preprocess.image_size = 32;
  o.batch_size = 256;
  o.horizontal_flip = true;
  run(state, root, src, o);
}

void Flickr224Csv(benchmark::State& state) {
  const Flickr* f = flickr();
  if (!f) {
    state.SkipWithError("shared data not present");
    return;
  }
  LoaderOptions o;
  o.batch_size = 32;
  run(state, f->csv, {}, o);
}

void Flickr224Shards(benchmark::State& state) {
  const Flickr* f = flickr();
  if (!f) {
    state.SkipWithError("shared data not present");
    return;
  }
  LoaderOptions o;
  o.batch_size = 32;
  o.shuffle_buffer = 1000;
  run(state, f->shards, {}, o);
}

BENCHMARK(Cifar10Folders)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->MinTime(3)->Unit(benchmark::kMillisecond);
BENCHMARK(Flickr224Csv)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->MinTime(5)->Unit(benchmark::kMillisecond);
BENCHMARK(Flickr224Shards)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->MinTime(5)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (fs::exists(scratch())) fs::remove_all(scratch());
  return 0;
}
