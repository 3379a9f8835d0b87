#pragma once
// `clip serve`: the model loaded once behind an HTTP server (cpp-httplib):
//   POST /v1/embed     {"texts": [...]} | {"images": [base64, ...]}  -> {"model", "dim", "embeddings"}
//   POST /v1/search    {"text"} | {"image": base64}, "k", "threshold" -> {"results": [{rank, path, score, ...}]}
//   GET  /             a search page (query box, thumbnails with scores, drop an image, /?q=dog)
//   GET  /thumb?path=P the image file of an indexed path (any other path: 404)
//   GET  /healthz      status, model, indexed images, batching counters
//   Immich's machine-learning API: GET /ping -> pong; POST /predict (multipart: entries, image | text)
//   clip-retrieval's back end: GET /indices-list, POST /knn-service, POST /metadata
// Requests are bounded (--max-body-bytes: 413; a full encoder queue: 503; malformed JSON,
// multipart, base64 or image: 400 naming the problem) and concurrent encodes share batches.
#include <atomic>
#include <memory>
#include <string>

#include "clip/clip.h"
#include "search/vector_index.h"

namespace clip::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (printed)
  std::string db;   // index database for /v1/search, the page, /thumb, clip-retrieval
  search::IndexType index_type = search::IndexType::Exact;
  int ef_search = 256;  // HNSW candidates per query
  std::string model_name;  // in replies (default: the model's folder name)
  size_t max_body_bytes = 32u << 20;
  size_t max_queue = 256;
  int max_batch = 32;
  int threads = 8;  // HTTP worker threads
  int timeout_s = 30;
};

class Server {
 public:
  Server(const clip::Model& model, const ServerOptions& options);
  ~Server();
  // Binds the socket; returns the port (the chosen one when options.port is 0).
  int bind();
  // Serves until stop() (from any thread).
  void serve();
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::serve
