#pragma once
// The training data pipeline (issue 5): image-caption pairs from CSV/TSV files, WebDataset tar
// shards, or labelled sets (class folders, IDX, shards with .cls) captioned through prompt
// templates; decoded and augmented on worker threads with prefetch; shuffled with a fixed seed
// giving a fixed order; resumable from a position. Evaluation reads the same sources through
// datasets.h.
//
// Determinism: everything random about a sample (its place in the order, its crop, its
// template) is a function of (seed, epoch, sample index), never of thread timing, so a given
// seed yields the same batches with any number of workers, and seek(position) continues a run
// exactly where position() was taken.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/datasets.h"
#include "vision/preprocess.h"

namespace clip {
class Tokenizer;
}

namespace clip::data {

// Where the pairs come from. `spec` is one source or several separated by "::" (their samples
// are concatenated, e.g. "cifar10/train::flickr8k/captions.txt"). A source is
//   * a .csv/.tsv file: image and caption columns named by csv_img_key / csv_caption_key
//     (open_clip's --csv-img-key/--csv-caption-key; separator by extension or csv_separator),
//     one row per pair (several rows may share an image), relative paths against its folder;
//   * WebDataset shards ("shards-{000..099}.tar", comma-separated lists): key.jpg|png|webp +
//     key.txt (caption) and/or key.cls (label), streamed with libarchive;
//   * a labelled set (folder of class folders, IDX file, shards with .cls but no .txt, or a
//     CSV without the caption column but with label/class columns, as cifar10_jpeg's
//     *_labels.csv): each sample's caption is a template (from `templates`, chosen per
//     sample and epoch) with every "{}" replaced by its class name.
// A corrupt or missing image, an empty caption or a bad .cls skips the sample (counted in
// LoaderStats, one warning line on stderr per sample); missing sources, unreadable CSVs and
// sets with no samples throw clip::Error naming the file.
struct PairSourceOptions {
  std::string csv_img_key = "filepath";
  std::string csv_caption_key = "title";
  char csv_separator = 0;                  // 0: '\t' for .tsv, ',' otherwise
  std::vector<std::string> templates;      // "a photo of a {}." style; required for labelled sets
  std::vector<std::string> classnames;     // overrides a labelled set's own class names (and
                                           // names shards' .cls labels, else "0", "1", ...)
  int64_t limit = 0;                       // > 0: first `limit` samples of each source (shards:
                                           // in shard order, counted from headers at construction)
};

struct LoaderOptions {
  clip::PreprocessConfig preprocess;  // output size, mean/std, resize (evaluation transform)
  bool augment = true;                // random resized crop (else the evaluation transform)
  double crop_scale_min = 0.9, crop_scale_max = 1.0;  // open_clip's RandomResizedCrop scale
  bool horizontal_flip = false;
  PhotometricOptions photometric;     // colour jitter, grayscale, blur, noise after crop and flip
  int64_t batch_size = 64;
  int context_length = 77;            // longer captions are truncated (end token kept), as open_clip
  uint64_t seed = 0;
  int workers = 2;                    // decoding threads (0: decode in next(), on the caller's thread)
  int prefetch_batches = 4;           // decoded batches kept ready beyond the one being assembled
  int64_t shuffle_buffer = 10000;     // for streamed shards; indexable sources use a full permutation
  bool shuffle = true;
  // false: the remainder of an epoch comes as a last, smaller batch (evaluation passes).
  bool drop_last = true;
  clip::DecodeOptions decode;         // e.g. jpeg_draft_min_side for large JPEGs (not bit-exact)
};

// A position in the infinite stream of batches: `samples` samples of epoch `epoch` have been
// delivered (skipped samples included).
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t samples = 0;
};

struct Batch {
  int64_t size = 0;
  std::vector<float> pixels;            // [size, 3, S, S], normalised
  std::vector<int32_t> ids;             // [size, context_length]
  std::vector<int> labels;              // per sample, -1 when unlabelled
  std::vector<std::string> captions;    // the caption each sample was given
  LoaderPosition end;                   // the position after this batch
};

struct LoaderStats {
  int64_t delivered = 0;          // samples in batches
  int64_t skipped_corrupt = 0;    // images that failed to decode (warned once each, not fatal)
  int64_t skipped_empty = 0;      // empty or whitespace-only captions
  int64_t epoch_size = 0;         // samples per epoch (-1 when not known in advance: streams)
};

class PairLoader {
 public:
  PairLoader(const std::string& spec, const PairSourceOptions& source,
             const clip::Tokenizer& tokenizer, const LoaderOptions& options);
  ~PairLoader();
  // The next full batch (batches never straddle epochs' ends: the remainder of an epoch that
  // does not fill a batch is dropped, open_clip's drop_last). Blocks on the workers.
  Batch next();
  LoaderPosition position() const;
  // Restart the stream at `p` (as returned by position() or Batch::end) without decoding the
  // skipped samples.
  void seek(const LoaderPosition& p);
  LoaderStats stats() const;
  // The class names that Batch::labels index: the labelled sources' names merged by name in
  // source order (a source's names are its class folders, its CSV class column, "0".."9" for
  // IDX, or PairSourceOptions::classnames). Empty when no source has labels. Shards with .cls
  // contribute only through PairSourceOptions::classnames (their labels are kept as they are).
  const std::vector<std::string>& classnames() const;
  // Full batches per epoch (epoch_size / batch_size, +1 for a remainder when !drop_last), or
  // -1 for streamed shards, whose size is not known in advance (unless `limit` bounds it).
  // Skipped samples make an epoch shorter than this.
  int64_t batches_per_epoch() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::data
