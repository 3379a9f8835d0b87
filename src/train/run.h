#pragma once
// A training run (issue 5, `clip train`): the loop around Trainer::step that takes batches
// from a source, logs metrics, validates, writes checkpoints and the final model, and resumes
// exactly.
//
// Output folder:
//   config.json        the run's resolved configuration (RunOptions::config_json)
//   metrics.jsonl      one JSON object per line: {"type": "train", step, epoch, samples, loss,
//                      lr, logit_scale, temperature, grad_norm, samples_per_s, elapsed} per
//                      logged step, {"type": "val", step, epoch, samples, elapsed, <metric>: v}
//                      per validation
//   curves.svg         loss, learning rate, temperature and validation metrics against the step
//   checkpoints/       step_<8 digits>/ training checkpoints (checkpoint.h) and `latest`
//   model/             the final model directory (written atomically at the end)
//   .lock              held (flock) while a run writes here: two runs never share a folder
//
// Exact resume: the state a step depends on is the parameters, the AdamW moments and step
// counter, the schedule's step and the data (a function of the loader's position and seed);
// the checkpoint holds all of it, so a resumed run computes the same steps bit for bit as an
// uninterrupted one (with the same thread count; see docs/training.md).
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace clip::train {

// Training is built on the networks (src/nn): their names are used here unqualified.
using namespace clip::nn;

// Where batches come from: data::PairLoader in `clip train`, synthetic batches in tests.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next batch; Batch::end is the position after it.
  virtual data::Batch next() = 0;
  // Continue from `position` (a Batch::end of an earlier batch, or {0, 0}).
  virtual void seek(const data::LoaderPosition& position) = 0;
};

struct RunOptions {
  std::string output;             // the run folder (created)
  int64_t total_steps = 0;        // must equal the Trainer's TrainConfig::total_steps
  int64_t save_every = 0;         // checkpoint every N steps (<= 0: only at the end / on stop)
  CheckpointPolicy keep;
  int64_t log_every = 1;          // a metrics line every N steps (and the last step)
  int64_t val_every = 0;          // validate every N steps (<= 0: only at the end), when a
                                  // validator is given
  uint64_t seed = 0;
  std::string config_json = "{}"; // resolved configuration (config.json, kept in checkpoints)
  ModelDirectoryExtras model_extras;
  bool progress = true;           // a progress line on a terminal (stderr)
  // Data parallel (issue 18): every rank runs the same TrainRun on the same BatchSource (the
  // global batches) and trains on its slice of each (rank r: rows r N / W ..); rank 0 alone
  // writes the folder (lock, config.json, metrics, checkpoints, model) and logs. The trainer's
  // TrainConfig::comm must be the same communicator.
  Comm* comm = nullptr;
  // Receives log lines (validation results, checkpoints, resume); default: stderr.
  std::function<void(const std::string&)> log;
};

// Named validation metrics for the current model (e.g. {"val/i2t_r1", 0.42}).
using Validator = std::function<std::vector<std::pair<std::string, double>>(ClipNetwork<float>&)>;

struct RunResult {
  bool finished = false;    // total_steps reached (false: stopped by the stop flag)
  int64_t step = 0;         // steps done
  std::string checkpoint;   // the newest checkpoint directory
  std::string model_dir;    // <output>/model when finished
};

class TrainRun {
 public:
  TrainRun(ClipNetwork<float>& model, Trainer<float>& trainer, BatchSource& source, RunOptions options);
  ~TrainRun();
  TrainRun(const TrainRun&) = delete;
  TrainRun& operator=(const TrainRun&) = delete;

  // Takes the output folder (a lock; clip::Error if another run holds it), removes leftovers of
  // interrupted saves, writes config.json, and then either
  //   * resume_from empty: starts a new run (an error if the folder already has checkpoints:
  //     resume them or choose another folder); metrics.jsonl is started afresh;
  //   * resume_from = a checkpoint directory: loads it into the model, the optimizer, the
  //     trainer's step and the source's position, and cuts metrics.jsonl back to its step.
  void start(const std::string& resume_from = "");

  // Trains until total_steps (then writes a last checkpoint and <output>/model) or until
  // *stop becomes non-zero (checked after every step; then saves a checkpoint of the step
  // reached). Throws clip::Error on failures (a checkpoint that cannot be written names the
  // file; earlier checkpoints stay intact).
  RunResult run(const std::atomic<int>* stop = nullptr, const Validator& validate = {});

  int64_t step() const;
  const std::string& checkpoints_dir() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// curves.svg from metrics records (the objects of metrics.jsonl): panels for loss, learning
// rate, temperature and every validation metric, against the step. Self-contained SVG 1.1.
std::string render_curves_svg(const std::vector<std::string>& metrics_lines);

}  // namespace clip::train
