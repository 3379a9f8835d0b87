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

std::string sidecar_path(const std::string& npy) {
  std::filesystem::path side(npy);
  side.replace_extension(".tsv");
  return side.string();
}

void run_embed(const EmbedOptions& o) {
  // Everything that can be checked is checked before any work.
  if (o.out.size() < 5 || o.out.compare(o.out.size() - 4, 4, ".npy") != 0)
    throw Error("-o " + o.out + ": the output must be a .npy file (a .tsv beside it names the rows)");
  check_output_file(o.out, "-o");
  check_output_file(sidecar_path(o.out), "-o (its .tsv)");
  const std::vector<std::string> images = o.images.paths();
  // Row order: images (as given, folders expanded sorted), the texts files' lines, then each
  // --text in order.
  const std::vector<std::string> texts = o.texts.texts(/*keep_empty_lines=*/true);
  if (images.empty() && texts.empty()) throw Error("nothing to embed: give IMAGES and/or --text/--texts-file");
  clip::Model model = load_model(o.flags);
  const int D = model.embed_dim();
  std::vector<float> out;
  std::string sidecar = "row\tkind\tsource\n";
  size_t row = 0;
  if (!images.empty()) {
    std::vector<size_t> kept;
    Embeddings e = encode_images("embed", model, images, o.flags.batch_size, o.images.strict, kept);
    out.insert(out.end(), e.data.begin(), e.data.end());
    for (size_t i : kept) sidecar += std::to_string(row++) + "\timage\t" + tsv_escape(images[i]) + "\n";
  }
  if (!texts.empty()) {
    Embeddings e = encode_texts("embed", model, texts, o.flags.batch_size, o.texts.truncate);
    out.insert(out.end(), e.data.begin(), e.data.end());
    for (auto& t : texts) sidecar += std::to_string(row++) + "\ttext\t" + tsv_escape(t) + "\n";
  }
  write_npy_f32(o.out, out.data(), {int64_t(row), int64_t(D)});
  write_file_atomic(sidecar_path(o.out), sidecar);
  std::fprintf(stderr, "wrote %zu x %d embeddings to %s (rows named in %s)\n", row, D, o.out.c_str(),
               sidecar_path(o.out).c_str());
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
