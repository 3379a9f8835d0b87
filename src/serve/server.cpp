#include "serve/server.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "core/percent_encode.h"
#include "search/index_db.h"
#include "search/indexer.h"
#include "search/searcher.h"
#include "core/base64.h"
#include "serve/batcher.h"
#include "serve/page.h"

namespace clip::serve {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// An answer other than 200: the status and a message naming the problem.
struct HttpError {
  int status;
  std::string message;
};

void reply_json(httplib::Response& res, const json& j, int status = 200) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

json parse_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const json::exception& e) {
    throw HttpError{400, std::string("malformed JSON: ") + e.what()};
  }
}

std::string image_bytes(const json& v, const std::string& where) {
  if (!v.is_string()) throw HttpError{400, where + ": expected a base64 string"};
  auto bytes = base64_decode(v.get<std::string>());
  if (!bytes) throw HttpError{400, where + ": not valid base64"};
  if (bytes->empty()) throw HttpError{400, where + ": empty image"};
  return std::move(*bytes);
}

std::string mime_of(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (e == ".jpg" || e == ".jpeg") return "image/jpeg";
  if (e == ".png") return "image/png";
  if (e == ".webp") return "image/webp";
  if (e == ".gif") return "image/gif";
  if (e == ".bmp") return "image/bmp";
  return "application/octet-stream";
}

}  // namespace

struct Server::Impl {
  const clip::Model& model;
  ServerOptions o;
  httplib::Server http;
  EncodeBatcher batcher;
  std::optional<search::IndexDb> db;
  // The searcher of the database's current generation: when `clip index` has committed changes
  // since (the generation moved), the next query opens the new vector index, so a running server
  // sees new, moved and deleted images without a restart.
  std::shared_ptr<search::Searcher> searcher;
  int64_t searcher_generation = -1;
  std::mutex search_mu;
  std::atomic<int64_t> requests{0}, errors{0};

  Impl(const clip::Model& m, const ServerOptions& opt)
      : model(m), o(opt), batcher(m, opt.max_batch, opt.max_queue) {}

  Encoded wait(std::future<Encoded> f) {
    if (f.wait_for(std::chrono::seconds(o.timeout_s)) != std::future_status::ready)
      throw HttpError{503, "the encoder did not answer within " + std::to_string(o.timeout_s) + " s"};
    return f.get();
  }

  std::future<Encoded> submit_text(const std::string& t, bool truncate) {
    try {
      return batcher.text(t, truncate);
    } catch (const QueueFull&) {
      throw HttpError{503, "busy: the encoder queue is full (--max-queue); retry later"};
    }
  }
  std::future<Encoded> submit_image(std::string bytes, const std::string& name) {
    try {
      return batcher.image(std::move(bytes), name);
    } catch (const QueueFull&) {
      throw HttpError{503, "busy: the encoder queue is full (--max-queue); retry later"};
    }
  }

  Encoded encode_one(std::future<Encoded> f, const std::string& what) {
    Encoded e = wait(std::move(f));
    if (!e.error.empty()) throw HttpError{400, what + ": " + e.error};
    return e;
  }

  std::shared_ptr<search::Searcher> need_searcher() {
    if (!db) throw HttpError{404, "no index: start clip serve with --db"};
    std::lock_guard<std::mutex> lk(search_mu);
    const int64_t g = db->generation();
    if (!searcher || g != searcher_generation) {
      searcher = std::make_shared<search::Searcher>(*db, o.index_type, o.ef_search);
      searcher_generation = g;
    }
    return searcher;
  }

  // The query of /v1/search and /knn-service: a text, a base64 image or a raw embedding.
  std::vector<float> query_of(const json& j) {
    if (j.contains("text")) {
      if (!j["text"].is_string()) throw HttpError{400, "text: expected a string"};
      return encode_one(submit_text(j["text"].get<std::string>(), j.value("truncate", false)), "text").embedding;
    }
    if (j.contains("image")) return encode_one(submit_image(image_bytes(j["image"], "image"), "image"), "image").embedding;
    if (j.contains("embedding_input")) {
      const json& v = j["embedding_input"];
      if (!v.is_array() || int(v.size()) != model.embed_dim())
        throw HttpError{400, "embedding_input: expected " + std::to_string(model.embed_dim()) + " numbers"};
      std::vector<float> q;
      double n = 0;
      for (const json& x : v) {
        if (!x.is_number()) throw HttpError{400, "embedding_input: expected numbers"};
        q.push_back(x.get<float>());
        n += double(q.back()) * q.back();
      }
      if (!(n > 0) || !std::isfinite(n)) throw HttpError{400, "embedding_input: a zero or non-finite vector"};
      for (float& x : q) x = float(x / std::sqrt(n));
      return q;
    }
    throw HttpError{400, "give \"text\", \"image\" (base64) or \"embedding_input\""};
  }

  template <typename F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      ++requests;
      try {
        f(req, res);
      } catch (const HttpError& e) {
        ++errors;
        reply_json(res, {{"error", e.message}}, e.status);
      } catch (const std::exception& e) {
        ++errors;
        reply_json(res, {{"error", e.what()}}, 500);
      }
    };
  }

  void routes();
};

void Server::Impl::routes() {
  http.Get("/ping", guarded([](const httplib::Request&, httplib::Response& res) { res.set_content("pong", "text/plain"); }));

  http.Get("/healthz", guarded([this](const httplib::Request&, httplib::Response& res) {
    const BatcherStats s = batcher.stats();
    reply_json(res, {{"status", "ok"},
                     {"model", o.model_name},
                     {"description", model.describe()},
                     {"dim", model.embed_dim()},
                     {"indexed", db ? need_searcher()->size() : 0},
                     {"requests", requests.load()},
                     {"errors", errors.load()},
                     {"batches", s.batches},
                     {"items", s.items},
                     {"largest_batch", s.largest_batch}});
  }));

  http.Get("/", guarded([](const httplib::Request&, httplib::Response& res) {
    res.set_content(search_page_html(), "text/html; charset=utf-8");
  }));

  http.Post("/v1/embed", guarded([this](const httplib::Request& req, httplib::Response& res) {
    const json j = parse_body(req);
    if (!j.is_object()) throw HttpError{400, "expected a JSON object with \"texts\" or \"images\""};
    EncodeBatcher::Request request;
    request.truncate = j.value("truncate", false);
    std::vector<std::string> what;
    if (j.contains("texts")) {
      if (!j["texts"].is_array()) throw HttpError{400, "texts: expected an array of strings"};
      for (size_t i = 0; i < j["texts"].size(); ++i) {
        const json& t = j["texts"][i];
        if (!t.is_string()) throw HttpError{400, "texts[" + std::to_string(i) + "]: expected a string"};
        what.push_back("texts[" + std::to_string(i) + "]");
        request.texts.push_back(t.get<std::string>());
      }
    } else if (j.contains("images")) {
      if (!j["images"].is_array()) throw HttpError{400, "images: expected an array of base64 strings"};
      for (size_t i = 0; i < j["images"].size(); ++i) {
        const std::string name = "images[" + std::to_string(i) + "]";
        what.push_back(name);
        request.images.push_back(image_bytes(j["images"][i], name));
        request.names.push_back(name);
      }
    } else {
      throw HttpError{400, "give \"texts\" (strings) or \"images\" (base64 strings)"};
    }
    std::vector<std::future<Encoded>> futures;
    try {
      futures = batcher.submit(std::move(request));
    } catch (const QueueFull&) {
      throw HttpError{503, "busy: the encoder queue is full (--max-queue); retry later, or send fewer items"};
    }
    json rows = json::array();
    for (size_t i = 0; i < futures.size(); ++i) rows.push_back(encode_one(std::move(futures[i]), what[i]).embedding);
    reply_json(res, {{"model", o.model_name}, {"dim", model.embed_dim()}, {"embeddings", rows}});
  }));

  http.Post("/v1/search", guarded([this](const httplib::Request& req, httplib::Response& res) {
    const json j = parse_body(req);
    if (!j.is_object()) throw HttpError{400, "expected a JSON object"};
    const std::shared_ptr<search::Searcher> searcher_now = need_searcher();
    search::Searcher& s = *searcher_now;
    const int k = j.value("k", 10);
    if (k < 1 || k > 1000) throw HttpError{400, "k: expected 1..1000"};
    const float threshold = j.value("threshold", -2.f);
    const std::vector<float> q = query_of(j);
    json results = json::array();
    for (const auto& h : s.search(q, k, threshold))
      results.push_back({{"rank", h.rank}, {"path", h.path}, {"score", h.score}, {"width", h.width}, {"height", h.height}});
    reply_json(res, {{"results", results}});
  }));

  http.Get("/thumb", guarded([this](const httplib::Request& req, httplib::Response& res) {
    if (!db) throw HttpError{404, "no index"};
    const std::string path = req.get_param_value("path");
    // Only files of the index: a path that is not a row (../, /etc/passwd) is simply unknown.
    if (path.empty() || !db->find_path(path)) throw HttpError{404, "not an indexed image"};
    std::string bytes;
    try {
      bytes = search::read_indexed_image(path);  // a file or a member of an indexed tar shard
    } catch (const Error&) {
      throw HttpError{404, "the indexed file is gone"};
    }
    res.set_header("Cache-Control", "max-age=3600");
    res.set_content(std::move(bytes), mime_of(path).c_str());
  }));

  // ---- Immich's machine-learning service ----
  http.Post("/predict", guarded([this](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_file("entries")) throw HttpError{422, "missing the \"entries\" field"};
    json entries;
    try {
      entries = json::parse(req.get_file_value("entries").content);
    } catch (const json::exception& e) {
      throw HttpError{422, std::string("entries: malformed JSON: ") + e.what()};
    }
    if (!entries.is_object() || !entries.contains("clip") || !entries["clip"].is_object() ||
        !(entries["clip"].contains("visual") || entries["clip"].contains("textual")))
      throw HttpError{422, "entries: expected {\"clip\": {\"visual\" | \"textual\": {\"modelName\": ...}}}"};
    json out;
    if (req.has_file("image")) {
      if (!entries["clip"].contains("visual")) throw HttpError{422, "entries asks for textual but an image was sent"};
      const Encoded e = encode_one(submit_image(req.get_file_value("image").content, "image"), "image");
      out["clip"] = json(e.embedding).dump();
      out["imageHeight"] = e.height;
      out["imageWidth"] = e.width;
    } else if (req.has_file("text")) {
      if (!entries["clip"].contains("textual")) throw HttpError{422, "entries asks for visual but a text was sent"};
      out["clip"] = json(encode_one(submit_text(req.get_file_value("text").content, true), "text").embedding).dump();
    } else {
      throw HttpError{400, "send an \"image\" file or a \"text\" field"};
    }
    reply_json(res, out);
  }));

  // ---- clip-retrieval's back end (what clip-front calls) ----
  http.Get("/indices-list", guarded([](const httplib::Request&, httplib::Response& res) { reply_json(res, {"clip"}); }));
  auto row_json = [](const search::SearchHit& h) {
    return json{{"id", h.id},
                {"similarity", h.score},
                {"url", "/thumb?path=" + percent_encode(h.path)},
                {"image_path", h.path},
                {"caption", fs::path(h.path).filename().string()}};
  };
  http.Post("/knn-service", guarded([this, row_json](const httplib::Request& req, httplib::Response& res) {
    const json j = parse_body(req);
    if (!j.is_object()) throw HttpError{400, "expected a JSON object"};
    const std::shared_ptr<search::Searcher> searcher_now = need_searcher();
    search::Searcher& s = *searcher_now;
    if (j.value("modality", std::string("image")) != "image")
      throw HttpError{400, "modality: this index holds images only"};
    const int k = j.value("num_images", j.value("num_result_ids", 40));
    if (k < 1 || k > 10000) throw HttpError{400, "num_images: expected 1..10000"};
    const std::vector<float> q = query_of(j);
    json out = json::array();
    for (const auto& h : s.search(q, k)) out.push_back(row_json(h));
    reply_json(res, out);
  }));
  http.Post("/metadata", guarded([this](const httplib::Request& req, httplib::Response& res) {
    const json j = parse_body(req);
    if (!db) throw HttpError{404, "no index"};
    if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array()) throw HttpError{400, "expected {\"ids\": [...]}"};
    json out = json::array();
    for (const json& id : j["ids"]) {
      if (!id.is_number_integer()) throw HttpError{400, "ids: expected integers"};
      auto r = db->get(id.get<int64_t>(), false);
      if (!r) continue;
      out.push_back({{"id", r->id},
                     {"metadata",
                      {{"url", "/thumb?path=" + percent_encode(r->path)},
                       {"image_path", r->path},
                       {"caption", fs::path(r->path).filename().string()},
                       {"width", r->width},
                       {"height", r->height}}}});
    }
    reply_json(res, out);
  }));
}

Server::Server(const clip::Model& model, const ServerOptions& options) : impl_(std::make_unique<Impl>(model, options)) {
  Impl& m = *impl_;
  if (m.o.model_name.empty()) m.o.model_name = "clip";
  if (!m.o.db.empty()) {
    m.db.emplace(search::IndexDb::open(m.o.db, /*create=*/false));
    (void)m.need_searcher();  // the vector index opened (or built) before the first request
  }
  m.http.set_payload_max_length(m.o.max_body_bytes);  // larger bodies: 413
  m.http.set_read_timeout(m.o.timeout_s, 0);
  m.http.set_write_timeout(m.o.timeout_s, 0);
  const int threads = std::max(1, m.o.threads);
  m.http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  m.http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      const std::string msg = res.status == 413   ? "the request body exceeds --max-body-bytes"
                              : res.status == 404 ? "no such endpoint"
                                                  : "bad request";
      reply_json(res, {{"error", msg}}, res.status);
    }
  });
  m.routes();
}

Server::~Server() = default;

int Server::bind() {
  Impl& m = *impl_;
  int port = m.o.port;
  if (port == 0) {
    port = m.http.bind_to_any_port(m.o.host);
  } else if (!m.http.bind_to_port(m.o.host, port)) {
    port = -1;
  }
  if (port <= 0) throw Error(m.o.host + ":" + std::to_string(m.o.port) + ": cannot listen (in use, or not an address here)");
  return port;
}

void Server::serve() { impl_->http.listen_after_bind(); }
void Server::stop() { impl_->http.stop(); }

}  // namespace clip::serve
