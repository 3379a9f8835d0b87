// `clip embed`: images and/or texts -> one L2-normalized float32 row each, in input order,
// written as .npy plus a TSV sidecar (row, kind, source) naming each row.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"

namespace clip::app {
namespace {

struct EmbedOptions {
  ModelFlags flags;
  std::string out, texts_file;
  std::vector<std::string> images, texts;
  int batch_size = 32;
};

std::string tsv_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\t') o += "\\t";
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\\') o += "\\\\";
    else o += c;
  }
  return o;
}

void run_embed(const EmbedOptions& o) {
  std::vector<std::string> images = expand_image_inputs(o.images);
  // Row order: images (as given, directories expanded sorted), the --texts file's lines, then
  // each --text in order.
  std::vector<std::string> texts;
  if (!o.texts_file.empty()) texts = read_text_lines(o.texts_file, /*keep_empty=*/true);
  texts.insert(texts.end(), o.texts.begin(), o.texts.end());
  if (images.empty() && texts.empty()) throw Error("embed: nothing to embed: give --images and/or --texts/--text");
  clip::Model model = load_model(o.flags);
  const int D = model.embed_dim();
  const size_t rows = images.size() + texts.size();
  std::vector<float> out(rows * size_t(D));
  std::string sidecar = "row\tkind\tsource\n";
  size_t row = 0;
  if (!images.empty()) {
    Progress progress("embed images", int64_t(images.size()), "img");
    for (size_t s = 0; s < images.size(); s += size_t(o.batch_size)) {
      std::vector<std::string> chunk(images.begin() + long(s),
                                     images.begin() + long(std::min(images.size(), s + size_t(o.batch_size))));
      Embeddings e = model.encode_image_files(chunk, o.batch_size);
      std::copy(e.data.begin(), e.data.end(), out.begin() + long(row * size_t(D)));
      for (auto& p : chunk) sidecar += std::to_string(row++) + "\timage\t" + tsv_escape(p) + "\n";
      progress.add(int64_t(chunk.size()));
    }
  }
  if (!texts.empty()) {
    Progress progress("embed texts", int64_t(texts.size()), "txt");
    const size_t bs = size_t(std::max(o.batch_size, 1));
    for (size_t s = 0; s < texts.size(); s += bs) {
      std::vector<std::string> chunk(texts.begin() + long(s), texts.begin() + long(std::min(texts.size(), s + bs)));
      Embeddings e = model.encode_texts(chunk, int(bs));
      std::copy(e.data.begin(), e.data.end(), out.begin() + long(row * size_t(D)));
      for (auto& t : chunk) sidecar += std::to_string(row++) + "\ttext\t" + tsv_escape(t) + "\n";
      progress.add(int64_t(chunk.size()));
    }
  }
  write_npy_f32(o.out, out.data(), {int64_t(rows), int64_t(D)});
  std::filesystem::path side(o.out);
  side.replace_extension(".tsv");
  write_file_atomic(side.string(), sidecar);
  std::fprintf(stderr, "wrote %zu x %d embeddings to %s (rows named in %s)\n", rows, D, o.out.c_str(),
               side.string().c_str());
}

CommandRegistrar reg("embed", 10, [](CLI::App& root) {
  auto o = std::make_shared<EmbedOptions>();
  auto* c = root.add_subcommand("embed", "Embed images and texts into L2-normalized rows of a .npy file");
  o->flags.add_to(c);
  c->add_option("--images", o->images, "Image files and/or directories (searched recursively, sorted)");
  c->add_option("--texts", o->texts_file, "Text file: one UTF-8 text per line")->check(CLI::ExistingFile);
  c->add_option("--text", o->texts, "A text to embed (repeatable)");
  c->add_option("-o,--output", o->out, "Output .npy (float32 [rows, embed_dim]); a .tsv beside it names each row")
      ->required();
  c->add_option("--batch-size", o->batch_size, "Batch size")->check(CLI::Range(1, 4096));
  c->callback([o] { run_embed(*o); });
});

}  // namespace
}  // namespace clip::app
