// `clip embed`: images and/or texts -> one L2-normalized float32 row each, in input order,
// written as .npy plus a TSV sidecar (row, kind, source) naming each row. Unreadable images are
// skipped (one warning each, a summary; --strict: fatal), so the sidecar says which rows exist.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"
#include "core/io.h"

namespace clip::app {
namespace {

struct EmbedOptions {
  ModelFlags flags;
  ImageFlags images;
  TextFlags texts;
  std::string out;
};

void run_embed(const EmbedOptions& o) {
  // Everything that can be checked is checked before any work.
  if (o.out.size() < 5 || o.out.compare(o.out.size() - 4, 4, ".npy") != 0)
    throw Error("-o " + o.out + ": the output must be a .npy file (a .tsv beside it names the rows)");
  check_output_file(o.out, "-o");
  check_output_file(embedding_sidecar_path(o.out), "-o (its .tsv)");
  const std::vector<std::string> images = o.images.paths();
  // Row order: images (as given, folders expanded sorted), the texts files' lines, then each
  // --text in order.
  const std::vector<std::string> texts = o.texts.texts(/*keep_empty_lines=*/true);
  if (images.empty() && texts.empty()) throw Error("nothing to embed: give IMAGES and/or --text/--texts-file");
  clip::Model model = load_model(o.flags);
  EmbeddingRows rows;
  rows.cols = model.embed_dim();
  if (!images.empty()) {
    std::vector<size_t> kept;
    Embeddings e = encode_images("embed", model, images, o.flags.batch_size, o.images.strict, kept);
    rows.data.insert(rows.data.end(), e.data.begin(), e.data.end());
    for (size_t i : kept) {
      rows.kinds.push_back("image");
      rows.sources.push_back(images[i]);
    }
  }
  if (!texts.empty()) {
    Embeddings e = encode_texts("embed", model, texts, o.flags.batch_size, o.texts.truncate);
    rows.data.insert(rows.data.end(), e.data.begin(), e.data.end());
    for (const auto& t : texts) {
      rows.kinds.push_back("text");
      rows.sources.push_back(t);
    }
  }
  rows.rows = int64_t(rows.kinds.size());
  write_embedding_rows(o.out, rows);
  std::fprintf(stderr, "wrote %lld x %lld embeddings to %s (rows named in %s)\n", static_cast<long long>(rows.rows),
               static_cast<long long>(rows.cols), o.out.c_str(), embedding_sidecar_path(o.out).c_str());
}

CommandRegistrar reg("embed", 10, [](CLI::App& root) {
  auto o = std::make_shared<EmbedOptions>();
  auto* c = root.add_subcommand("embed", "Embed images and texts into L2-normalized rows of a .npy file");
  o->flags.add_to(c);
  o->images.add_to(c, "Images to embed");
  o->texts.add_to(c);
  c->add_option("-o,--output", o->out, "Output .npy (float32 [rows, embed_dim]); a .tsv beside it names each row")
      ->required();
  c->footer(
      "Examples:\n"
      "  clip embed -m models/cifar10-vit-tiny photos/ -o photos.npy\n"
      "  clip embed -m model.safetensors --text \"a photo of a cat\" --texts-file captions.txt -o texts.npy\n"
      "Rows: images (folders expanded, sorted), then the texts files' lines, then each --text.\n"
      "Unreadable images are skipped with a warning (--strict: stop); the .tsv names the rows written.\n"
      "zeroshot and similarity read the result back with --embeddings.");
  c->callback([o] { run_embed(*o); });
});

}  // namespace
}  // namespace clip::app
