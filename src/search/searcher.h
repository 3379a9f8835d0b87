#pragma once
// Queries against an index database: text, an example image, or rclip-style weighted sums of
// terms ("2:golden retriever" added, "-:grass" subtracted), ranked by cosine similarity.
#include <string>
#include <vector>

#include "clip/clip.h"
#include "search/index_db.h"
#include "search/vector_index.h"

namespace clip::search {

struct QueryTerm {
  float weight = 1.f;  // negative: subtracted
  bool is_image = false;
  std::string value;  // text, or an image path
};

// "golden retriever" -> weight 1; "2:golden retriever" -> weight 2; "0.5:cat" -> 0.5. A prefix
// that is not a number is part of the text ("note: x" stays a text).
QueryTerm parse_term(const std::string& s, bool is_image, float sign);

// The query vector: the normalized sum of weight * (normalized) term embeddings.
std::vector<float> query_vector(const clip::Model& model, const std::vector<QueryTerm>& terms, bool truncate = false);

struct SearchHit {
  int rank = 0;  // 1-based
  std::string path;
  float score = 0;  // cosine
  int width = 0, height = 0;
  int64_t id = 0;
};

class Searcher {
 public:
  // ef_search: how many candidates an HNSW search keeps (recall against latency; ignored by the
  // exact index).
  Searcher(IndexDb& db, IndexType type, int ef_search = 256);
  // The best `k` with score >= `threshold`, best first.
  std::vector<SearchHit> search(const std::vector<float>& query, int k, float threshold = -2.f) const;
  int64_t size() const { return index_.size(); }

 private:
  IndexDb& db_;
  VectorIndex index_;
};

}  // namespace clip::search
