// `clip index`: folders and file lists into an index database (search/indexer.h), incremental.
#include <cstdio>
#include <memory>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "apps/stop_signals.h"
#include "core/error.h"
#include "search/indexer.h"

namespace clip::app {
namespace {

struct IndexOptions {
  ModelFlags flags;
  std::string db, index_type = "exact";
  std::vector<std::string> inputs;
  bool strict = false, all = false, json = false;
};

void run_index(const IndexOptions& o) {
  using namespace clip::search;
  const IndexType type = parse_index_type(o.index_type);
  check_output_file(o.db, "--db");
  // The inputs are listed before the model loads: a mistyped folder fails at once.
  (void)collect_image_files(o.inputs, o.all);
  IndexDb db = IndexDb::open(o.db, /*create=*/true);
  ModelFlags flags = o.flags;
  if (flags.model.empty()) {
    auto m = db.model();
    if (!m) throw Error("give --model (a new index records it; later runs may omit it)");
    flags.model = m->path;
  }
  const clip::Model model = load_model(flags);
  db.bind_model(model_identity(model, flags.model));
  IndexerOptions io;
  io.batch_size = flags.batch_size;
  io.strict = o.strict;
  io.include_hidden = o.all;
  io.index_type = type;
  io.warn = [](const std::string& m) { std::fprintf(stderr, "clip index: warning: skipped %s\n", m.c_str()); };
  const std::atomic<int>& stop = enable_graceful_stop();
  const IndexerReport r = update_index(db, model, o.inputs, io, &stop);  // graceful until exit
  if (o.json) {
    print_json_line({{"found", r.found}, {"unchanged", r.unchanged}, {"added", r.added}, {"changed", r.changed},
                     {"moved", r.moved}, {"duplicates", r.duplicates}, {"removed", r.removed},
                     {"skipped", r.skipped}, {"total", r.total}, {"seconds", r.seconds},
                     {"encode_seconds", r.encode_seconds}, {"stopped", r.stopped}});
  }
  std::fprintf(stderr,
               "clip index: %lld files: %lld unchanged, %lld added, %lld changed, %lld moved, %lld duplicates, "
               "%lld skipped; %lld removed; %lld in %s (%.1f s)\n",
               static_cast<long long>(r.found), static_cast<long long>(r.unchanged), static_cast<long long>(r.added),
               static_cast<long long>(r.changed), static_cast<long long>(r.moved),
               static_cast<long long>(r.duplicates), static_cast<long long>(r.skipped),
               static_cast<long long>(r.removed), static_cast<long long>(r.total), o.db.c_str(), r.seconds);
  if (r.stopped) {
    std::fprintf(stderr, "clip index: stopped; the batches done are saved, run the same command to continue\n");
    throw CLI::RuntimeError(128 + stop.load());
  }
}

CommandRegistrar reg("index", 40, [](CLI::App& root) {
  auto o = std::make_shared<IndexOptions>();
  auto* c = root.add_subcommand("index", "Index images for search: an incremental SQLite + FAISS database");
  o->flags.add_to(c, /*model_required=*/false);
  c->add_option("--db", o->db, "Index database (SQLite; created if missing)")->required();
  c->add_option("inputs", o->inputs, "Folders (recursive), image files, .txt lists of paths, image,caption CSVs, tar shards (WebDataset; 's-{000..009}.tar')")->required();
  c->add_option("--index-type", o->index_type, "Vector index: exact (inner product, brute force) or hnsw")
      ->capture_default_str();
  c->add_flag("--strict", o->strict, "Stop at the first unreadable image (default: skip it with a warning)");
  c->add_flag("--all", o->all, "Also hidden folders and files, @eaDir, node_modules");
  c->add_flag("--json", o->json, "Print the counts as one JSON line");
  c->footer(
      "Examples:\n"
      "  clip index -m models/cifar10-vit-tiny --db photos.db ~/Pictures\n"
      "  clip index --db photos.db ~/Pictures          # again: only new, changed, moved or deleted files\n"
      "Unchanged files (path, mtime, size) are not read; moves and duplicates are found by SHA-256 and\n"
      "not encoded again. Ctrl-C keeps the batches done; the same command continues.");
  c->callback([o] { run_index(*o); });
});

}  // namespace
}  // namespace clip::app
