#pragma once
// Evaluation metrics with the definitions the CLIP paper and CLIP_benchmark use:
//   * top-k accuracy: the true class is among the k highest scores;
//   * mean per-class recall: scikit-learn's balanced_accuracy_score (the mean, over classes
//     that occur in the labels, of the fraction of that class's samples predicted correctly);
//   * retrieval recall@k: a query is a hit if ANY correct item is in its top k (so with five
//     captions per image, image->text counts a hit when one of the five is in the top k);
//   * mean / median rank: 1-based rank of the best-ranked correct item, over queries.
// Ties are broken as a stable descending sort would (lower index first), so every metric is a
// deterministic function of the scores and equals numpy's argsort(-s, kind="stable").
#include <cstdint>
#include <map>
#include <vector>

namespace clip::eval {

// 1-based rank of column `target` in a row of `n` scores, ties broken by lower index first.
int64_t rank_of(const float* row, int64_t n, int64_t target);

// Row-wise argmax (first maximum on ties).
std::vector<int> argmax_rows(const float* scores, int64_t rows, int cols);

struct ClassificationMetrics {
  int64_t count = 0;
  double top1 = 0, top5 = 0;          // top5 is NaN with fewer than 5 classes (as CLIP_benchmark)
  double mean_per_class_recall = 0;   // over classes with at least one sample
  std::vector<double> per_class_recall;  // NaN for classes without samples
  std::vector<int64_t> per_class_count;  // samples per true class
  std::vector<int64_t> confusion;        // [true][predicted], row-major, num_classes^2; empty unless asked
  int num_classes = 0;
};

// `scores` is row-major [n, num_classes]; labels in [0, num_classes). Throws clip::Error on a
// label outside the range.
ClassificationMetrics classification_metrics(const float* scores, int64_t n, int num_classes,
                                             const int* labels, bool with_confusion = false);

// Fraction of rows whose label is within the top k (k clipped to num_classes).
double topk_accuracy(const float* scores, int64_t n, int num_classes, const int* labels, int k);
double mean_per_class_recall(const int* labels, const int* predictions, int64_t n, int num_classes);
std::vector<int64_t> confusion_matrix(const int* labels, const int* predictions, int64_t n, int num_classes);

struct RetrievalDirection {
  std::map<int, double> recall;  // k -> fraction of queries with a correct item in the top k
  double mean_rank = 0, median_rank = 0;
  std::vector<int64_t> ranks;    // per query, 1-based rank of its best correct item
};

struct RetrievalMetrics {
  RetrievalDirection image_to_text;  // queries: images, gallery: captions ("text retrieval")
  RetrievalDirection text_to_image;  // queries: captions, gallery: images ("image retrieval")
};

// Embeddings are row-major and need not be normalized (they are L2-normalized here; similarity
// is the cosine). text_image[t] is the index of the image caption t describes. Every image
// must have at least one caption. Works in query blocks so memory stays O(block * gallery).
RetrievalMetrics retrieval_metrics(const float* image_embeddings, int64_t num_images,
                                   const float* text_embeddings, int64_t num_texts, int dim,
                                   const std::vector<int64_t>& text_image,
                                   const std::vector<int>& ks = {1, 5, 10});

// In-place L2 normalization of each row (rows of zeros stay zero).
void l2_normalize_rows(float* x, int64_t rows, int dim);

}  // namespace clip::eval
