// `clip serve`: the model behind an HTTP server (serve/server.h).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "apps/stop_signals.h"
#include "core/error.h"
#include "search/index_db.h"
#include "serve/server.h"

namespace clip::app {
namespace {

struct ServeOptions {
  ModelFlags flags;
  clip::serve::ServerOptions server;
  std::string index_type = "exact";
  int ef_search = 256;
  int64_t max_body_mb = 32;
};

void run_serve(ServeOptions o) {
  namespace fs = std::filesystem;
  o.server.index_type = clip::search::parse_index_type(o.index_type);
  o.server.ef_search = o.ef_search;
  o.server.max_body_bytes = size_t(o.max_body_mb) << 20;
  if (o.server.db.empty() && o.flags.model.empty()) throw Error("give --model (or --db, whose model is used)");
  const auto t0 = std::chrono::steady_clock::now();
  const clip::Model model = o.server.db.empty()
                                ? load_model(o.flags)
                                : load_index_model(clip::search::IndexDb::open(o.server.db, /*create=*/false), o.flags);
  if (o.server.model_name.empty()) {
    fs::path p = fs::path(o.flags.model).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    o.server.model_name = p.stem().string();
  }
  clip::serve::Server server(model, o.server);
  const int port = server.bind();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "clip serve: model %s (%s) loaded in %.2f s\n", o.server.model_name.c_str(),
               model.describe().c_str(), load_s);
  std::fprintf(stderr, "clip serve: listening on http://%s:%d/\n", o.server.host.c_str(), port);
  std::fflush(stderr);
  const std::atomic<int>& stop = enable_graceful_stop();
  std::atomic<bool> done{false};
  std::thread watcher([&] {  // Ctrl-C / SIGTERM: stop accepting, finish the requests in flight
    while (!stop.load() && !done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    server.stop();
  });
  server.serve();
  done.store(true);
  watcher.join();
  disable_graceful_stop();
  std::fprintf(stderr, "clip serve: stopped\n");
}

CommandRegistrar reg("serve", 42, [](CLI::App& root) {
  auto o = std::make_shared<ServeOptions>();
  auto* c = root.add_subcommand("serve", "Serve embeddings and search over HTTP (also Immich's and clip-retrieval's APIs)");
  o->flags.add_to(c, /*model_required=*/false);
  c->add_option("--db", o->server.db, "Index database for search, the page and thumbnails (its model is the default)")
      ->check(CLI::ExistingFile);
  c->add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
  c->add_option("--port", o->server.port, "Port (0: any free one, printed)")->check(CLI::Range(0, 65535))->capture_default_str();
  c->add_option("--model-name", o->server.model_name, "Model name in replies (default: the model's folder name)");
  c->add_option("--index-type", o->index_type, "Vector index: exact or hnsw")->capture_default_str();
  c->add_option("--ef-search", o->ef_search, "HNSW: candidates kept per query (more: higher recall, slower)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  c->add_option("--max-body-mb", o->max_body_mb, "Largest request body in MiB (larger: 413)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  c->add_option("--max-queue", o->server.max_queue, "Items waiting for the encoder at most (more: 503)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  c->add_option("--max-batch", o->server.max_batch, "Items per encoder call at most (concurrent requests share it)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  c->add_option("--http-threads", o->server.threads, "HTTP worker threads")->check(CLI::Range(1, 1024))->capture_default_str();
  c->add_option("--timeout", o->server.timeout_s, "Seconds to read a request, write a reply, or wait for the encoder")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  c->footer(
      "Examples:\n"
      "  clip serve --db photos.db --port 8080            # the page at http://127.0.0.1:8080/\n"
      "  clip serve -m models/cifar10-vit-tiny --port 3003 # embeddings only (Immich: MACHINE_LEARNING_URL)\n"
      "  curl -s localhost:8080/v1/search -d '{\"text\": \"a dog\", \"k\": 5}'\n"
      "Endpoints: POST /v1/embed, POST /v1/search, GET /, GET /thumb?path=, GET /healthz;\n"
      "Immich: GET /ping, POST /predict; clip-retrieval: GET /indices-list, POST /knn-service, POST /metadata.\n"
      "Ctrl-C or SIGTERM stops it (exit 0).");
  c->callback([o] { run_serve(*o); });
});

}  // namespace
}  // namespace clip::app
