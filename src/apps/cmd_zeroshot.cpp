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
  ImageFlags images;
  std::string labels;
  std::vector<std::string> label_list, labels_files, templates, templates_files, saved;
  int top_k = 5;
  bool truncate = false, json = false;
};

void run_zeroshot(const ZeroshotOptions& o) {
  std::vector<std::string> labels = split_labels(o.labels);
  labels.insert(labels.end(), o.label_list.begin(), o.label_list.end());
  for (const auto& f : o.labels_files) {
    auto l = read_text_lines(f);
    labels.insert(labels.end(), l.begin(), l.end());
  }
  if (labels.empty()) throw Error("no labels: give --labels \"dog,cat,...\", --label (repeatable) or --labels-file");
  std::vector<std::string> templates = o.templates;
  for (const auto& f : o.templates_files) {
    auto t = read_text_lines(f);
    templates.insert(templates.end(), t.begin(), t.end());
  }
  if (templates.empty()) templates = {"a photo of a {}."};
  for (const auto& t : templates) (void)format_prompt(t, "x");  // the one rule, checked before any work
  const std::vector<std::string> images = o.images.paths();
  if (images.empty() && o.saved.empty()) throw Error("no images: give IMAGES or --embeddings");
  clip::Model model = load_model(o.flags);
  std::vector<size_t> kept;
  Embeddings rows;
  std::vector<std::string> names;
  for (const std::string& npy : o.saved) {
    SavedEmbeddings s = read_saved_embeddings(npy);
    if (s.images.rows == 0) throw Error(npy + ": holds no image rows");
    if (s.images.cols != model.embed_dim())
      throw Error(npy + ": rows of dimension " + std::to_string(s.images.cols) + " do not come from this model " +
                  "(embedding dimension " + std::to_string(model.embed_dim()) + ")");
    rows.cols = s.images.cols;
    rows.data.insert(rows.data.end(), s.images.data.begin(), s.images.data.end());
    rows.rows += s.images.rows;
    names.insert(names.end(), s.image_sources.begin(), s.image_sources.end());
  }
  {
    // An over-long prompt is an error naming it (or, with --truncate, a note).
    std::vector<std::string> prompts;
    for (const auto& l : labels)
      for (const auto& t : templates) prompts.push_back(format_prompt(t, l));
    std::vector<int64_t> cut;
    (void)model.tokenize(prompts, o.truncate, &cut);
    if (!cut.empty())
      std::fprintf(stderr, "clip zeroshot: note: %zu of %zu prompts were longer than %d tokens and were truncated "
                   "(the first: \"%s\")\n", cut.size(), prompts.size(), model.context_length(),
                   prompts[size_t(cut[0])].c_str());
  }
  Embeddings classes = model.class_embeddings(labels, templates, o.truncate);
  if (!images.empty()) {
    Embeddings e = encode_images("zeroshot", model, images, o.flags.batch_size, o.images.strict, kept);
    rows.cols = e.cols;
    rows.data.insert(rows.data.end(), e.data.begin(), e.data.end());
    rows.rows += e.rows;
    for (size_t i : kept) names.push_back(images[i]);
  }
  for (int64_t i = 0; i < rows.rows; ++i) {
    const auto preds = model.zeroshot(rows.row(i), classes, labels, o.top_k);
    if (o.json) {
      nlohmann::json p = nlohmann::json::array();
      for (const auto& x : preds) p.push_back({{"label", x.label}, {"probability", x.probability}, {"cosine", x.cosine}});
      print_json_line({{"image", names[size_t(i)]}, {"predictions", p}});
      continue;
    }
    std::printf("%s\n", names[size_t(i)].c_str());
    for (const auto& p : preds) std::printf("  %6.2f%%  %s\n", 100.0 * p.probability, p.label.c_str());
  }
}

CommandRegistrar reg("zeroshot", 20, [](CLI::App& root) {
  auto o = std::make_shared<ZeroshotOptions>();
  auto* c = root.add_subcommand("zeroshot", "Zero-shot classification of images among labels");
  o->flags.add_to(c);
  o->images.add_to(c, "Images to classify");
  c->add_option("--labels", o->labels, "Comma-separated labels, e.g. \"dog,cat,bird\"");
  c->add_option("--label", o->label_list, "A label (repeatable; may contain commas)");
  c->add_option("--labels-file", o->labels_files, "A file of labels, one per line (repeatable)")->check(CLI::ExistingFile);
  c->add_option("--template", o->templates,
                "Prompt template; {} or {c} stands for the label (repeatable; averaged) [a photo of a {}.]");
  c->add_option("--templates-file", o->templates_files, "A file of templates, one per line (repeatable)")
      ->check(CLI::ExistingFile);
  c->add_option("-k,--top-k", o->top_k, "Labels printed per image")->check(CLI::Range(1, 100000))->capture_default_str();
  c->add_option("--embeddings", o->saved, "Image rows saved by clip embed (.npy with its .tsv) instead of "
                                          "encoding images again (repeatable)")
      ->check(CLI::ExistingFile);
  c->add_flag("--truncate", o->truncate, "Cut prompts longer than the model's context (default: an error)");
  c->add_flag("--json", o->json, "One JSON object per image: {\"image\", \"predictions\": [{\"label\", "
                                 "\"probability\", \"cosine\"}]}");
  c->footer(
      "Examples:\n"
      "  clip zeroshot -m models/cifar10-vit-tiny cat.jpg photos/ --labels \"cat,dog,ship\"\n"
      "  clip zeroshot -m model.safetensors --embeddings photos.npy --labels-file classes.txt \\\n"
      "      --templates-file templates.txt --json\n"
      "Templates: {} and {c} stand for the label (every occurrence); a template without one is an error.\n"
      "Unreadable images are skipped with a warning (--strict: stop).");
  c->callback([o] { run_zeroshot(*o); });
});

}  // namespace
}  // namespace clip::app
