#include "search/searcher.h"

#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "search/indexer.h"

namespace clip::search {

QueryTerm parse_term(const std::string& s, bool is_image, float sign) {
  QueryTerm t;
  t.is_image = is_image;
  t.value = s;
  t.weight = sign;
  const size_t colon = s.find(':');
  if (colon != std::string::npos && colon > 0 && colon + 1 < s.size()) {
    const std::string w = s.substr(0, colon);
    char* end = nullptr;
    const double v = std::strtod(w.c_str(), &end);
    if (end == w.c_str() + w.size() && std::isfinite(v)) {
      t.weight = float(v) * sign;
      t.value = s.substr(colon + 1);
    }
  }
  if (t.value.empty()) throw Error("empty query term '" + s + "'");
  return t;
}

std::vector<float> query_vector(const clip::Model& model, const std::vector<QueryTerm>& terms, bool truncate) {
  if (terms.empty()) throw Error("no query: give a text, --image, or --add terms");
  const int D = model.embed_dim();
  std::vector<float> q(size_t(D), 0.f);
  for (const QueryTerm& t : terms) {
    const clip::Embeddings e = t.is_image ? model.encode_image_files({t.value}) : model.encode_texts({t.value}, 1, truncate);
    for (int j = 0; j < D; ++j) q[size_t(j)] += t.weight * e.data[size_t(j)];
  }
  double n = 0;
  for (float v : q) n += double(v) * v;
  if (!(n > 1e-24)) throw Error("the query terms cancel out (their weighted sum is zero)");
  const float inv = float(1.0 / std::sqrt(n));
  for (float& v : q) v *= inv;
  return q;
}

Searcher::Searcher(IndexDb& db, IndexType type, int ef_search) : db_(db), index_(open_vector_index(db, type)) {
  index_.set_ef_search(ef_search);
}

std::vector<SearchHit> Searcher::search(const std::vector<float>& query, int k, float threshold) const {
  if (int(query.size()) != index_.dim())
    throw Error("query of dimension " + std::to_string(query.size()) + " for an index of dimension " +
                std::to_string(index_.dim()));
  std::vector<SearchHit> hits;
  for (const Neighbour& nb : index_.search(query.data(), k)) {
    if (nb.score < threshold) break;
    auto r = db_.get(nb.id, false);
    if (!r) continue;  // removed since the index was built
    SearchHit h;
    h.rank = int(hits.size()) + 1;
    h.path = r->path;
    h.score = nb.score;
    h.width = r->width;
    h.height = r->height;
    h.id = r->id;
    hits.push_back(std::move(h));
  }
  return hits;
}

}  // namespace clip::search
