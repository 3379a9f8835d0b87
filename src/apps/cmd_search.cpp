// `clip search`: text, an example image, or weighted sums of terms against an index database.
#include <cstdio>
#include <memory>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"
#include "search/searcher.h"

namespace clip::app {
namespace {

struct SearchOptions {
  ModelFlags flags;
  std::string db, index_type = "exact";
  int ef_search = 256;
  std::vector<std::string> query, images, add, subtract;
  int n = 10;
  float threshold = -2.f;
  bool json = false, paths_only = false, truncate = false;
};

void run_search(const SearchOptions& o) {
  using namespace clip::search;
  std::vector<QueryTerm> terms;
  for (const auto& q : o.query) terms.push_back(parse_term(q, false, 1.f));
  for (const auto& q : o.add) terms.push_back(parse_term(q, false, 1.f));
  for (const auto& q : o.subtract) terms.push_back(parse_term(q, false, -1.f));
  for (const auto& q : o.images) terms.push_back(parse_term(q, true, 1.f));
  if (terms.empty()) throw Error("no query: give a text, --image FILE, or --add terms");
  IndexDb db = IndexDb::open(o.db, /*create=*/false);
  ModelFlags flags = o.flags;
  const clip::Model model = load_index_model(db, flags);
  const Searcher searcher(db, parse_index_type(o.index_type), o.ef_search);
  const std::vector<float> q = query_vector(model, terms, o.truncate);
  for (const SearchHit& h : searcher.search(q, o.n, o.threshold)) {
    if (o.json) {
      print_json_line({{"rank", h.rank}, {"path", h.path}, {"score", h.score}, {"width", h.width}, {"height", h.height}});
    } else if (o.paths_only) {
      std::printf("%s\n", h.path.c_str());
    } else {
      std::printf("%3d  %.4f  %s\n", h.rank, double(h.score), h.path.c_str());
    }
  }
}

CommandRegistrar reg("search", 41, [](CLI::App& root) {
  auto o = std::make_shared<SearchOptions>();
  auto* c = root.add_subcommand("search", "Search an index by text or by example image");
  o->flags.add_to(c, /*model_required=*/false);
  c->add_option("--db", o->db, "Index database written by clip index")->required()->check(CLI::ExistingFile);
  c->add_option("query", o->query, "Text query; \"2:golden retriever\" weighs a term");
  c->add_option("--image", o->images, "Search by an example image (repeatable; \"W:path\" weighs it)");
  c->add_option("-a,--add", o->add, "Add a text term (repeatable; \"W:text\")");
  c->add_option("-s,--subtract", o->subtract, "Subtract a text term (repeatable; \"W:text\")");
  c->add_option("-n,--top", o->n, "Results")->check(CLI::Range(1, 100000))->capture_default_str();
  c->add_option("--threshold", o->threshold, "Only results with cosine >= S")->check(CLI::Range(-1.0, 1.0));
  c->add_option("--index-type", o->index_type, "Vector index: exact or hnsw (approximate)")->capture_default_str();
  c->add_option("--ef-search", o->ef_search, "HNSW: candidates kept per query (more: higher recall, slower)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  c->add_flag("--truncate", o->truncate, "Cut a query longer than the model's context");
  c->add_flag("--json", o->json, "One JSON object per result: rank, path, score, width, height");
  c->add_flag("-f,--paths", o->paths_only, "Print paths only");
  c->footer(
      "Examples:\n"
      "  clip search --db photos.db \"a dog on a beach\"\n"
      "  clip search --db photos.db --image cat.jpg -n 20 --json\n"
      "  clip search --db photos.db \"a dog\" --add \"2:snow\" --subtract grass --threshold 0.2\n"
      "The model is the one the index was built with (--model to name a copy elsewhere).");
  c->callback([o] { run_search(*o); });
});

}  // namespace
}  // namespace clip::app
