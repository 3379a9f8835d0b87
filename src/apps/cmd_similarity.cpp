// `clip similarity`: the cosine matrix of images (rows) against texts (columns), as TSV (cells
// escaped) or JSON lines; images and texts encoded now or read from `clip embed`'s output.
#include <cstdio>
#include <memory>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"

namespace clip::app {
namespace {

struct SimilarityOptions {
  ModelFlags flags;
  ImageFlags images;
  TextFlags texts;
  std::vector<std::string> saved;
  bool logits = false, json = false;
};

void append(Embeddings& to, const Embeddings& from, const std::string& what) {
  if (from.rows == 0) return;
  if (to.rows > 0 && to.cols != from.cols)
    throw Error(what + ": embeddings of dimension " + std::to_string(from.cols) + " cannot be compared with " +
                std::to_string(to.cols) + " (another model?)");
  to.cols = from.cols;
  to.data.insert(to.data.end(), from.data.begin(), from.data.end());
  to.rows += from.rows;
}

void run_similarity(const SimilarityOptions& o) {
  Embeddings a, b;
  std::vector<std::string> image_names, text_names;
  for (const std::string& npy : o.saved) {
    SavedEmbeddings s = read_saved_embeddings(npy);
    append(a, s.images, npy);
    append(b, s.texts, npy);
    image_names.insert(image_names.end(), s.image_sources.begin(), s.image_sources.end());
    text_names.insert(text_names.end(), s.text_sources.begin(), s.text_sources.end());
  }
  const std::vector<std::string> images = o.images.paths();
  const std::vector<std::string> texts = o.texts.texts(/*keep_empty_lines=*/false);
  if (int64_t(images.size()) + a.rows == 0 || int64_t(texts.size()) + b.rows == 0)
    throw Error("give at least one image (IMAGES or --embeddings) and one text (--text, --texts-file or --embeddings)");
  const bool need_model = !images.empty() || !texts.empty() || o.logits;
  if (need_model && o.flags.model.empty())
    throw Error("give --model (to encode images or texts" + std::string(o.logits ? ", and for --logits" : "") + ")");
  float scale = 1.f;
  if (need_model) {
    clip::Model model = load_model(o.flags);
    if (!images.empty()) {
      std::vector<size_t> kept;
      append(a, encode_images("similarity", model, images, o.flags.batch_size, o.images.strict, kept), "IMAGES");
      for (size_t i : kept) image_names.push_back(images[i]);
    }
    if (!texts.empty()) {
      append(b, encode_texts("similarity", model, texts, o.flags.batch_size, o.texts.truncate), "--text");
      text_names.insert(text_names.end(), texts.begin(), texts.end());
    }
    if ((a.rows && a.cols != model.embed_dim()) || (b.rows && b.cols != model.embed_dim()))
      throw Error("--embeddings: saved rows of dimension " + std::to_string(a.rows ? a.cols : b.cols) +
                  " do not come from this model (embedding dimension " + std::to_string(model.embed_dim()) + ")");
    if (o.logits) scale = model.logit_scale();
  }
  Embeddings m = cosine_matrix(a, b);
  if (o.json) {
    for (int64_t i = 0; i < m.rows; ++i) {
      nlohmann::json scores = nlohmann::json::array();
      for (int64_t j = 0; j < m.cols; ++j)
        scores.push_back({{"text", text_names[size_t(j)]}, {"score", scale * m.data[size_t(i * m.cols + j)]}});
      print_json_line({{"image", image_names[size_t(i)]}, {"scores", scores}});
    }
    return;
  }
  std::printf("image");
  for (auto& t : text_names) std::printf("\t%s", tsv_escape(t).c_str());
  std::printf("\n");
  for (int64_t i = 0; i < m.rows; ++i) {
    std::printf("%s", tsv_escape(image_names[size_t(i)]).c_str());
    for (int64_t j = 0; j < m.cols; ++j) std::printf("\t%.6f", double(scale * m.data[size_t(i * m.cols + j)]));
    std::printf("\n");
  }
}

CommandRegistrar reg("similarity", 30, [](CLI::App& root) {
  auto o = std::make_shared<SimilarityOptions>();
  auto* c = root.add_subcommand("similarity", "Print the cosine similarity matrix of images x texts (TSV or JSON lines)");
  o->flags.add_to(c, /*model_required=*/false);
  o->images.add_to(c, "Images (rows)");
  o->texts.add_to(c);
  c->add_option("--embeddings", o->saved, "Rows saved by clip embed (.npy with its .tsv): its images and texts "
                                          "join the ones given (repeatable)")
      ->check(CLI::ExistingFile);
  c->add_flag("--logits", o->logits, "Print logit_scale * cosine instead of cosine");
  c->add_flag("--json", o->json, "One JSON object per image: {\"image\", \"scores\": [{\"text\", \"score\"}]}");
  c->footer(
      "Examples:\n"
      "  clip similarity -m models/cifar10-vit-tiny cat.jpg dog.jpg --text \"a cat\" --text \"a dog\"\n"
      "  clip similarity --embeddings photos.npy --embeddings captions.npy --json\n"
      "TSV cells escape tab, newline, carriage return and backslash as \\t \\n \\r \\\\.\n"
      "--model is needed to encode IMAGES or texts, and for --logits.");
  c->callback([o] { run_similarity(*o); });
});

}  // namespace
}  // namespace clip::app
