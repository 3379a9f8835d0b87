// `clip similarity`: the cosine matrix of images (rows) against texts (columns).
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"

namespace clip::app {
namespace {

struct SimilarityOptions {
  ModelFlags flags;
  std::vector<std::string> images, texts, texts_args;
  bool logits = false;
};

void run_similarity(const SimilarityOptions& o) {
  std::vector<std::string> images = expand_image_inputs(o.images);
  std::vector<std::string> texts = o.texts;
  // --texts takes files (one text per line) or the texts themselves.
  for (const auto& t : o.texts_args) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(t, ec)) {
      auto l = read_text_lines(t);
      texts.insert(texts.end(), l.begin(), l.end());
    } else {
      texts.push_back(t);
    }
  }
  if (images.empty() || texts.empty()) throw Error("similarity: give at least one image and one text");
  clip::Model model = load_model(o.flags);
  Embeddings a = model.encode_image_files(images), b = model.encode_texts(texts);
  Embeddings m = cosine_matrix(a, b);
  float scale = o.logits ? model.logit_scale() : 1.f;
  std::printf("image");
  for (auto& t : texts) std::printf("\t%s", t.c_str());
  std::printf("\n");
  for (int64_t i = 0; i < m.rows; ++i) {
    std::printf("%s", images[size_t(i)].c_str());
    for (int64_t j = 0; j < m.cols; ++j) std::printf("\t%.6f", double(scale * m.data[size_t(i * m.cols + j)]));
    std::printf("\n");
  }
}

CommandRegistrar reg("similarity", 30, [](CLI::App& root) {
  auto o = std::make_shared<SimilarityOptions>();
  auto* c = root.add_subcommand("similarity", "Print the cosine similarity matrix of images x texts (TSV)");
  o->flags.add_to(c);
  c->add_option("--images", o->images, "Image files or directories")->required();
  c->add_option("--text", o->texts, "A text (repeatable)");
  c->add_option("--texts", o->texts_args, "Texts, or files with one text per line");
  c->add_flag("--logits", o->logits, "Print logit_scale * cosine instead of cosine");
  c->callback([o] { run_similarity(*o); });
});

}  // namespace
}  // namespace clip::app
