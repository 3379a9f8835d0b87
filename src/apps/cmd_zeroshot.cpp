// `clip zeroshot`: classify images among labels by prompt embeddings (the paper's zero-shot).
#include <cstdio>
#include <memory>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"

namespace clip::app {
namespace {

struct ZeroshotOptions {
  ModelFlags flags;
  std::string labels, labels_file, templates_file;
  std::vector<std::string> images, templates;
  int top_k = 5, batch_size = 32;
};

void run_zeroshot(ZeroshotOptions o) {
  std::vector<std::string> labels = split_labels(o.labels);
  if (!o.labels_file.empty()) {
    auto l = read_text_lines(o.labels_file);
    labels.insert(labels.end(), l.begin(), l.end());
  }
  if (labels.empty()) throw Error("zeroshot: no labels: give --labels \"dog,cat,...\" or --labels-file");
  if (!o.templates_file.empty()) {
    auto t = read_text_lines(o.templates_file);
    o.templates.insert(o.templates.end(), t.begin(), t.end());
  }
  if (o.templates.empty()) o.templates = {"a photo of a {}."};
  std::vector<std::string> images = expand_image_inputs(o.images);
  clip::Model model = load_model(o.flags);
  Embeddings classes = model.class_embeddings(labels, o.templates);
  for (size_t s = 0; s < images.size(); s += size_t(o.batch_size)) {
    std::vector<std::string> chunk(images.begin() + long(s),
                                   images.begin() + long(std::min(images.size(), s + size_t(o.batch_size))));
    Embeddings e = model.encode_image_files(chunk, o.batch_size);
    for (size_t i = 0; i < chunk.size(); ++i) {
      std::printf("%s\n", chunk[i].c_str());
      for (auto& p : model.zeroshot(e.row(int64_t(i)), classes, labels, o.top_k))
        std::printf("  %6.2f%%  %s\n", 100.0 * p.probability, p.label.c_str());
    }
  }
}

CommandRegistrar reg("zeroshot", 20, [](CLI::App& root) {
  auto o = std::make_shared<ZeroshotOptions>();
  auto* c = root.add_subcommand("zeroshot", "Zero-shot classification of images among labels");
  o->flags.add_to(c);
  c->add_option("images", o->images, "Image files or directories")->required();
  c->add_option("--labels", o->labels, "Comma-separated labels, e.g. \"dog,cat,bird\"");
  c->add_option("--labels-file", o->labels_file, "File with one label per line")->check(CLI::ExistingFile);
  c->add_option("--template", o->templates, "Prompt template with {} for the label (repeatable; averaged)");
  c->add_option("--templates-file", o->templates_file, "File with one template per line")->check(CLI::ExistingFile);
  c->add_option("-k,--top-k", o->top_k, "How many labels to print per image")->check(CLI::Range(1, 100000));
  c->add_option("--batch-size", o->batch_size, "Batch size")->check(CLI::Range(1, 4096));
  c->callback([o] { run_zeroshot(*o); });
});

}  // namespace
}  // namespace clip::app
