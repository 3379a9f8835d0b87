#include "search/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "backend/matmul.h"

namespace clip::search {

IndexType parse_index_type(const std::string& s) {
  if (s == "exact" || s == "flat") return IndexType::Exact;
  if (s == "hnsw") return IndexType::Hnsw;
  throw Error("--index-type " + s + ": expected exact or hnsw");
}

const char* index_type_name(IndexType t) { return t == IndexType::Hnsw ? "hnsw" : "exact"; }

namespace {

// The vectors of an HNSW graph, with inner products by our kernel (backend/matmul.h, AVX2 + FMA
// where the CPU has it) instead of Debian's FAISS build for baseline x86-64: building the graph
// is nothing but such products, and runs about 7x faster this way (5,000 x 512 here: 4.2 s ->
// 0.6 s). The stored layout is IndexFlatIP's, and it is written to disk as one.
struct FastFlatIP : faiss::IndexFlatIP {
  using faiss::IndexFlatIP::IndexFlatIP;

  struct Distances : faiss::FlatCodesDistanceComputer {
    const float* query = nullptr;
    int64_t dim;
    explicit Distances(const faiss::IndexFlat& index)
        : faiss::FlatCodesDistanceComputer(index.codes.data(), index.code_size), dim(index.d) {}
    void set_query(const float* x) override { query = x; }
    float distance_to_code(const uint8_t* code) override {
      return clip::dot(query, reinterpret_cast<const float*>(code), dim);
    }
    float symmetric_dis(idx_t i, idx_t j) override {
      return clip::dot(reinterpret_cast<const float*>(codes + i * code_size),
                       reinterpret_cast<const float*>(codes + j * code_size), dim);
    }
  };
  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer() const override { return new Distances(*this); }
};

// Puts the HNSW graph's vectors in a FastFlatIP (after reading from disk: the file holds a plain
// IndexFlatIP).
void use_fast_storage(faiss::IndexHNSW& h) {
  // (read_index makes a plain IndexFlat with the inner-product metric, not an IndexFlatIP)
  auto* flat = dynamic_cast<faiss::IndexFlat*>(h.storage);
  if (!flat || flat->metric_type != faiss::METRIC_INNER_PRODUCT || dynamic_cast<FastFlatIP*>(flat)) return;
  auto* fast = new FastFlatIP(flat->d);
  fast->codes.swap(flat->codes);
  fast->ntotal = flat->ntotal;
  if (h.own_fields) delete h.storage;
  h.storage = fast;
  h.own_fields = true;
}

}  // namespace

struct VectorIndex::Impl {
  std::unique_ptr<faiss::Index> index;  // an IndexIDMap2 around the flat or HNSW index
  IndexType type = IndexType::Exact;
  int dim = 0;
};

VectorIndex::VectorIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VectorIndex::VectorIndex(VectorIndex&&) noexcept = default;
VectorIndex& VectorIndex::operator=(VectorIndex&&) noexcept = default;
VectorIndex::~VectorIndex() = default;

VectorIndex VectorIndex::build(IndexType type, int dim, const std::vector<int64_t>& ids,
                               const std::vector<float>& vectors, int hnsw_m, int ef_search) {
  if (dim <= 0) throw Error("vector index: dimension must be positive");
  if (vectors.size() != ids.size() * size_t(dim)) throw Error("vector index: ids and vectors differ in count");
  auto impl = std::make_unique<Impl>();
  impl->type = type;
  impl->dim = dim;
  try {
    faiss::Index* inner = nullptr;
    if (type == IndexType::Hnsw) {
      auto* h = new faiss::IndexHNSWFlat(dim, hnsw_m, faiss::METRIC_INNER_PRODUCT);
      use_fast_storage(*h);
      h->hnsw.efConstruction = 2 * hnsw_m + 16;
      h->hnsw.efSearch = ef_search;
      inner = h;
    } else {
      inner = new faiss::IndexFlatIP(dim);
    }
    auto* map = new faiss::IndexIDMap2(inner);
    map->own_fields = true;
    impl->index.reset(map);
    if (!ids.empty()) map->add_with_ids(faiss::Index::idx_t(ids.size()), vectors.data(), reinterpret_cast<const faiss::Index::idx_t*>(ids.data()));
  } catch (const faiss::FaissException& e) {
    throw Error(std::string("vector index: ") + e.what());
  }
  return VectorIndex(std::move(impl));
}

VectorIndex VectorIndex::load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->index.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    throw Error(path + ": cannot read the vector index: " + e.what());
  }
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(impl->index.get());
  if (!map) throw Error(path + ": not a clip vector index");
  impl->dim = int(map->d);
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(map->index);
  if (hnsw) use_fast_storage(*hnsw);
  impl->type = hnsw ? IndexType::Hnsw : IndexType::Exact;
  return VectorIndex(std::move(impl));
}

void VectorIndex::save(const std::string& path) const {
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp" + std::to_string(std::random_device{}());
  try {
    faiss::write_index(impl_->index.get(), tmp.c_str());
  } catch (const faiss::FaissException& e) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write the vector index: " + e.what());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot replace: " + ec.message());
  }
}

int64_t VectorIndex::size() const { return int64_t(impl_->index->ntotal); }
int VectorIndex::dim() const { return impl_->dim; }
IndexType VectorIndex::type() const { return impl_->type; }

void VectorIndex::set_ef_search(int ef) {
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(impl_->index.get());
  if (auto* h = map ? dynamic_cast<faiss::IndexHNSW*>(map->index) : nullptr) h->hnsw.efSearch = ef;
}

std::vector<Neighbour> VectorIndex::search(const float* query, int k) const {
  if (k <= 0 || size() == 0) return {};
  k = int(std::min<int64_t>(k, size()));
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(impl_->index.get());
  if (auto* flat = map ? dynamic_cast<faiss::IndexFlat*>(map->index) : nullptr) {
    // The exact scan as one matrix-vector product through our GEMM (multi-threaded, the kernels
    // chosen for this CPU at run time): Debian's FAISS is built for baseline x86-64, and its
    // one-query scan runs on one thread (4 ms for 10k x 512 here, against ~0.5 ms).
    const int64_t n = int64_t(flat->ntotal);
    std::vector<float> scores(static_cast<size_t>(n));
    clip::sgemm(false, false, n, 1, impl_->dim, 1.f, flat->get_xb(), impl_->dim, query, 1, 0.f, scores.data(), 1);
    // The k best in a heap whose top is the worst kept (ties: the smaller id ranks first).
    auto better = [&](int64_t a, int64_t b) {
      return scores[size_t(a)] != scores[size_t(b)] ? scores[size_t(a)] > scores[size_t(b)]
                                                    : map->id_map[size_t(a)] < map->id_map[size_t(b)];
    };
    std::vector<int64_t> heap;
    heap.reserve(size_t(k));
    for (int64_t i = 0; i < n; ++i) {
      if (int(heap.size()) < k) {
        heap.push_back(i);
        std::push_heap(heap.begin(), heap.end(), better);
      } else if (better(i, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back() = i;
        std::push_heap(heap.begin(), heap.end(), better);
      }
    }
    std::sort_heap(heap.begin(), heap.end(), better);
    std::vector<Neighbour> out;
    for (int64_t i : heap) out.push_back({int64_t(map->id_map[size_t(i)]), scores[size_t(i)]});
    return out;
  }
  std::vector<float> scores(static_cast<size_t>(k));
  std::vector<faiss::Index::idx_t> ids(static_cast<size_t>(k));
  try {
    impl_->index->search(1, query, k, scores.data(), ids.data());
  } catch (const faiss::FaissException& e) {
    throw Error(std::string("vector index: search failed: ") + e.what());
  }
  std::vector<Neighbour> out;
  for (int i = 0; i < k; ++i)
    if (ids[size_t(i)] >= 0) out.push_back({int64_t(ids[size_t(i)]), scores[size_t(i)]});
  return out;
}

}  // namespace clip::search
