// `clip data corrupt`: reproducible corrupted copies of an image set (CIFAR-10-C style), laid
// out as class folders so `clip eval robustness --variant OUT/<corruption>/<severity>` reads
// them back. See src/eval/corrupt.h for the corruptions and their parameters.
#include <atomic>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "eval/corrupt.h"
#include "data/datasets.h"

namespace clip::app {
namespace {

namespace fs = std::filesystem;
using namespace clip::eval;
using namespace clip::data;

struct CorruptOptions {
  std::string input, output, root;
  std::vector<std::string> corruptions{"all"};
  std::vector<int> severities{1, 2, 3, 4, 5};
  uint64_t seed = 0;
  int64_t limit = 0;
};

// Class folder and file name of sample i in the output (the label's class name, else the
// label number, else no class folder).
std::string output_relative(const Dataset& d, size_t i, const std::string& ext) {
  const Sample& s = d.samples[i];
  std::string cls;
  if (s.label >= 0)
    cls = size_t(s.label) < d.classnames.size() && !d.classnames[size_t(s.label)].empty() ? d.classnames[size_t(s.label)]
                                                                                          : std::to_string(s.label);
  for (auto& ch : cls)
    if (ch == '/' || ch == '\\') ch = '_';
  // A stable unique stem: the sample's index (ids of tar/IDX samples are not file names).
  char stem[32];
  std::snprintf(stem, sizeof stem, "%06zu", i);
  return (cls.empty() ? std::string(stem) : cls + "/" + stem) + ext;
}

void run_corrupt(const CorruptOptions& o) {
  DatasetOptions dopt;
  dopt.root = o.root;
  dopt.limit = o.limit;
  const Dataset d = open_dataset(o.input, dopt);
  if (!d.subset_note.empty()) std::fprintf(stderr, "clip data corrupt: --limit: %s\n", d.subset_note.c_str());
  std::vector<Corruption> kinds;
  for (auto& c : o.corruptions) {
    if (c == "all") {
      for (auto& n : corruption_names()) kinds.push_back(parse_corruption(n));
    } else {
      kinds.push_back(parse_corruption(c));
    }
  }
  for (int s : o.severities)
    if (s < 1 || s > 5) throw Error("severity must be 1..5, got " + std::to_string(s));
  Progress progress("corrupting " + d.name, int64_t(d.size() * kinds.size() * o.severities.size()), "images");
  const int64_t n = int64_t(d.size());
  for (size_t i0 = 0; i0 < d.size(); i0 += 256) {
    const int64_t nb = std::min<int64_t>(256, n - int64_t(i0));
    std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = 0; j < nb; ++j) {
      try {
        const size_t i = i0 + size_t(j);
        const clip::Image img = d.load_image(i);
        const uint64_t seed = sample_seed(o.seed, d.samples[i].id);
        for (Corruption c : kinds)
          for (int s : o.severities) {
            std::string ext;
            auto bytes = corrupt_to_file(img, c, s, seed, ext);
            const fs::path out = fs::path(o.output) / corruption_name(c) / std::to_string(s) / output_relative(d, i, ext);
            std::error_code ec;
            fs::create_directories(out.parent_path(), ec);
            if (ec) throw Error(out.parent_path().string() + ": cannot create folder: " + ec.message());
            write_file_atomic(out.string(), bytes.data(), bytes.size(), Durability::Deferred);
          }
      } catch (...) {
#pragma omp critical
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    progress.add(nb * int64_t(kinds.size() * o.severities.size()));
  }
  sync_filesystem(o.output);  // every image on disk before "wrote" is printed
  progress.finish();
  std::printf("wrote %zu images x %zu corruptions x %zu severities under %s/<corruption>/<severity>/\n", d.size(),
              kinds.size(), o.severities.size(), o.output.c_str());
}

const CommandRegistrar data_command("data", 65, [](CLI::App& root) {
  CLI::App* data = root.add_subcommand("data", "Dataset tools");
  data->require_subcommand(1);
  auto opts = std::make_shared<CorruptOptions>();
  CLI::App* c = data->add_subcommand("corrupt", "Reproducible corrupted copies of an image set (CIFAR-10-C style)");
  c->add_option("-i,--input", opts->input, "Image set: class folders, CSV, IDX or .tar shards")->required();
  c->add_option("-o,--output", opts->output, "Output folder: OUT/<corruption>/<severity>/<class>/<n>.png")->required();
  c->add_option("-c,--corruption", opts->corruptions,
                "Corruptions (gaussian_noise, gaussian_blur, jpeg, contrast, grayscale, pixelate) or all")
      ->delimiter(',');
  c->add_option("-s,--severity", opts->severities, "Severities 1..5")->delimiter(',');
  c->add_option("--seed", opts->seed, "Noise seed (each image's noise also depends on its id)");
  c->add_option("--root", opts->root, "Folder that a CSV's relative image paths resolve against");
  c->add_option("--limit", opts->limit, "Only N images: a class-stratified (or uniform) seeded subset");
  c->footer(
      "Examples:\n"
      "  clip data corrupt -i ../shared/data/cifar10_jpeg/test -o corrupted -c all -s 3\n"
      "  clip data corrupt -i test.csv -o corrupted -c gaussian_noise,jpeg -s 1,3,5 --limit 1000 --seed 7");
  c->callback([opts] { run_corrupt(*opts); });
});

}  // namespace
}  // namespace clip::app
