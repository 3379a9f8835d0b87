#include "backend/matmul.h"
#include "eval/metrics.h"


#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"

namespace clip::eval {

int64_t rank_of(const float* row, int64_t n, int64_t target) {
  const float s = row[target];
  int64_t ahead = 0;
  for (int64_t j = 0; j < n; ++j) ahead += (row[j] > s) || (row[j] == s && j < target);
  return ahead + 1;
}

std::vector<int> argmax_rows(const float* scores, int64_t rows, int cols) {
  std::vector<int> out(size_t(rows), 0);
  for (int64_t i = 0; i < rows; ++i) {
    const float* r = scores + i * cols;
    int best = 0;
    for (int j = 1; j < cols; ++j)
      if (r[j] > r[best]) best = j;
    out[size_t(i)] = best;
  }
  return out;
}

static void check_labels(const int* labels, int64_t n, int num_classes, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= num_classes)
      throw Error(std::string(what) + " " + std::to_string(labels[i]) + " at index " + std::to_string(i) +
                  " is outside [0, " + std::to_string(num_classes) + ")");
}

double topk_accuracy(const float* scores, int64_t n, int num_classes, const int* labels, int k) {
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  check_labels(labels, n, num_classes, "label");
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) hits += rank_of(scores + i * num_classes, num_classes, labels[i]) <= k;
  return double(hits) / double(n);
}

std::vector<int64_t> confusion_matrix(const int* labels, const int* predictions, int64_t n, int num_classes) {
  check_labels(labels, n, num_classes, "label");
  check_labels(predictions, n, num_classes, "prediction");
  std::vector<int64_t> cm(size_t(num_classes) * num_classes, 0);
  for (int64_t i = 0; i < n; ++i) ++cm[size_t(labels[i]) * num_classes + predictions[i]];
  return cm;
}

double mean_per_class_recall(const int* labels, const int* predictions, int64_t n, int num_classes) {
  auto cm = confusion_matrix(labels, predictions, n, num_classes);
  double sum = 0;
  int present = 0;
  for (int c = 0; c < num_classes; ++c) {
    int64_t total = 0;
    for (int p = 0; p < num_classes; ++p) total += cm[size_t(c) * num_classes + p];
    if (total == 0) continue;  // balanced_accuracy_score ignores classes absent from the labels
    sum += double(cm[size_t(c) * num_classes + c]) / double(total);
    ++present;
  }
  return present ? sum / present : std::numeric_limits<double>::quiet_NaN();
}

ClassificationMetrics classification_metrics(const float* scores, int64_t n, int num_classes,
                                             const int* labels, bool with_confusion) {
  if (num_classes <= 0) throw Error("classification metrics: no classes");
  check_labels(labels, n, num_classes, "label");
  ClassificationMetrics m;
  m.count = n;
  m.num_classes = num_classes;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto pred = argmax_rows(scores, n, num_classes);
  m.top1 = topk_accuracy(scores, n, num_classes, labels, 1);
  m.top5 = num_classes >= 5 ? topk_accuracy(scores, n, num_classes, labels, 5) : nan;
  auto cm = confusion_matrix(labels, pred.data(), n, num_classes);
  m.per_class_recall.assign(size_t(num_classes), nan);
  m.per_class_count.assign(size_t(num_classes), 0);
  double sum = 0;
  int present = 0;
  for (int c = 0; c < num_classes; ++c) {
    int64_t total = 0;
    for (int p = 0; p < num_classes; ++p) total += cm[size_t(c) * num_classes + p];
    m.per_class_count[size_t(c)] = total;
    if (total == 0) continue;
    m.per_class_recall[size_t(c)] = double(cm[size_t(c) * num_classes + c]) / double(total);
    sum += m.per_class_recall[size_t(c)];
    ++present;
  }
  m.mean_per_class_recall = present ? sum / present : nan;
  if (with_confusion) m.confusion = std::move(cm);
  return m;
}

void l2_normalize_rows(float* x, int64_t rows, int dim) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    float* r = x + i * dim;
    double ss = 0;
    for (int j = 0; j < dim; ++j) ss += double(r[j]) * r[j];
    if (ss <= 0) continue;
    const float inv = float(1.0 / std::sqrt(ss));
    for (int j = 0; j < dim; ++j) r[j] *= inv;
  }
}

static void finish_direction(RetrievalDirection& d, const std::vector<int>& ks) {
  const size_t n = d.ranks.size();
  if (n == 0) throw Error("retrieval metrics: no queries");
  double sum = 0;
  for (auto r : d.ranks) sum += double(r);
  d.mean_rank = sum / double(n);
  std::vector<int64_t> sorted = d.ranks;
  std::sort(sorted.begin(), sorted.end());
  d.median_rank = n % 2 ? double(sorted[n / 2]) : 0.5 * double(sorted[n / 2 - 1] + sorted[n / 2]);
  for (int k : ks) {
    int64_t hits = 0;
    for (auto r : d.ranks) hits += r <= k;
    d.recall[k] = double(hits) / double(n);
  }
}

RetrievalMetrics retrieval_metrics(const float* image_embeddings, int64_t num_images,
                                   const float* text_embeddings, int64_t num_texts, int dim,
                                   const std::vector<int64_t>& text_image, const std::vector<int>& ks) {
  if (num_images <= 0 || num_texts <= 0 || dim <= 0) throw Error("retrieval metrics: empty input");
  if (int64_t(text_image.size()) != num_texts)
    throw Error("retrieval metrics: " + std::to_string(text_image.size()) + " caption->image indices for " +
                std::to_string(num_texts) + " captions");
  std::vector<std::vector<int64_t>> image_texts(static_cast<size_t>(num_images));
  for (int64_t t = 0; t < num_texts; ++t) {
    int64_t i = text_image[size_t(t)];
    if (i < 0 || i >= num_images)
      throw Error("retrieval metrics: caption " + std::to_string(t) + " points at image " + std::to_string(i) +
                  " of " + std::to_string(num_images));
    image_texts[size_t(i)].push_back(t);
  }
  for (int64_t i = 0; i < num_images; ++i)
    if (image_texts[size_t(i)].empty())
      throw Error("retrieval metrics: image " + std::to_string(i) + " has no caption");

  std::vector<float> img(image_embeddings, image_embeddings + num_images * dim);
  std::vector<float> txt(text_embeddings, text_embeddings + num_texts * dim);
  l2_normalize_rows(img.data(), num_images, dim);
  l2_normalize_rows(txt.data(), num_texts, dim);

  RetrievalMetrics m;
  m.image_to_text.ranks.resize(size_t(num_images));
  m.text_to_image.ranks.resize(size_t(num_texts));
  const int64_t block = 256;
  std::vector<float> sims;
  // image -> text: rows are images, columns captions.
  for (int64_t b0 = 0; b0 < num_images; b0 += block) {
    const int64_t nb = std::min(block, num_images - b0);
    sims.resize(size_t(nb * num_texts));
    clip::sgemm(false, true, int(nb), int(num_texts), dim, 1.0f, img.data() + b0 * dim, dim, txt.data(), dim, 0.0f, sims.data(), int(num_texts));
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t r = 0; r < nb; ++r) {
      int64_t best = std::numeric_limits<int64_t>::max();
      for (int64_t t : image_texts[size_t(b0 + r)])
        best = std::min(best, rank_of(sims.data() + r * num_texts, num_texts, t));
      m.image_to_text.ranks[size_t(b0 + r)] = best;
    }
  }
  // text -> image: rows are captions, columns images; exactly one correct image each.
  for (int64_t b0 = 0; b0 < num_texts; b0 += block) {
    const int64_t nb = std::min(block, num_texts - b0);
    sims.resize(size_t(nb * num_images));
    clip::sgemm(false, true, int(nb), int(num_images), dim, 1.0f, txt.data() + b0 * dim, dim, img.data(), dim, 0.0f, sims.data(), int(num_images));
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t r = 0; r < nb; ++r)
      m.text_to_image.ranks[size_t(b0 + r)] =
          rank_of(sims.data() + r * num_images, num_images, text_image[size_t(b0 + r)]);
  }
  finish_direction(m.image_to_text, ks);
  finish_direction(m.text_to_image, ks);
  return m;
}

}  // namespace clip::eval
