#pragma once
// Training checkpoints (issue 5): everything a run needs to continue exactly where it stopped.
//
// A checkpoint is a directory `<checkpoints>/step_<8 digits>/` holding
//   * a complete model directory, loadable by every `clip` command and by clip::Model::load:
//     open_clip_model.safetensors (F32, canonical OpenAI names), open_clip_config.json
//     ({"model_cfg": architecture, "preprocess_cfg": evaluation preprocessing}) and a copy of
//     the tokenizer vocabulary (vocab.json + merges.txt, or a *.txt.gz BPE file);
//   * train_state.safetensors: the AdamW moments (F32 tensors "exp_avg" and "exp_avg_sq", the
//     parameter arena's layout) and, as JSON in the metadata, the step counter, AdamW's step
//     counter, the loader position (epoch, samples), samples seen, the seed, elapsed time and
//     the run's resolved configuration.
// A checkpoint is written into `step_<N>.tmp-<pid>/` (every file fsynced), the directory is
// fsynced and renamed to its final name, and the parent is fsynced: a `step_*` directory is
// always complete; an interrupted write leaves only a `.tmp-*` directory, which readers ignore
// and the next run removes. `<checkpoints>/latest` names the newest checkpoint (written
// atomically after the rename, for people and scripts; readers take the highest complete
// step directory, which is the same one unless a crash fell between the two renames).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "nn/clip_network.h"
#include "train/optimizer.h"
#include "vision/preprocess.h"

namespace clip::train {

// Training is built on the networks (src/nn): their names are used here unqualified.
using namespace clip::nn;

// What a model directory carries besides the weights and the architecture.
struct ModelDirectoryExtras {
  clip::PreprocessConfig preprocess;  // evaluation preprocessing (image_size = the model's)
  // Tokenizer vocabulary files to write, as (file name in the directory, contents). Held in
  // memory: the source (e.g. the checkpoint a run resumed from) may be pruned meanwhile.
  std::vector<std::pair<std::string, std::vector<uint8_t>>> vocab_files;
};

// The files of a tokenizer vocabulary at `vocab_path` (a *.txt.gz BPE file, a vocab.json with
// merges.txt beside it, or a directory holding either, as Tokenizer::from_directory reads it),
// read for ModelDirectoryExtras::vocab_files. Throws clip::Error naming the path if there are
// none.
std::vector<std::pair<std::string, std::vector<uint8_t>>> vocabulary_files(const std::string& vocab_path);

// Writes a complete model directory (weights, open_clip_config.json with preprocess_cfg,
// vocabulary copies) into `dir`, creating it. Every file is written and fsynced; not atomic as
// a whole (save_checkpoint and the final model go through a temporary directory).
void write_trained_model_directory(const std::string& dir, const ClipNetwork<float>& model,
                                   const ModelDirectoryExtras& extras);

// The part of a run's state that is not a tensor.
struct TrainState {
  int64_t step = 0;             // optimisation steps done (the schedule's position)
  int64_t optimizer_steps = 0;  // AdamW's step counter t (bias corrections)
  data::LoaderPosition loader;  // the loader position after the last batch trained on
  int64_t samples_seen = 0;     // samples trained on
  uint64_t seed = 0;            // the run's seed (initialisation, data order, augmentation)
  double elapsed_seconds = 0;   // training wall time so far
  std::string config_json = "{}";  // the run's resolved configuration (a JSON object)
};

struct CheckpointPolicy {
  int keep = 3;             // keep the newest `keep` checkpoints (<= 0: keep all)
  int64_t keep_every = 0;   // > 0: also keep every checkpoint whose step is a multiple of this
};

// "step_00000042".
std::string checkpoint_dir_name(int64_t step);

// The complete checkpoints in `checkpoints_dir` (step directories with a train state), sorted
// by step; temporary directories are ignored. An absent folder has none.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& checkpoints_dir);
// The newest complete checkpoint, if any.
std::optional<std::string> latest_checkpoint(const std::string& checkpoints_dir);
// Removes the `*.tmp-*` leftovers of interrupted saves or deletions; returns how many. Only
// for a folder no other process is writing to (the trainer holds a lock on its output).
int remove_temporary_checkpoints(const std::string& checkpoints_dir);

// Saves a checkpoint of step `state.step` atomically (see above) and updates `latest`; returns
// the final directory. On failure (a full disk, ...) throws clip::Error naming the file that
// could not be written; the temporary directory is removed and earlier checkpoints are left
// as they were. An existing checkpoint of the same step is replaced.
// Test hook: CLIP_TEST_SLOW_SAVE=<ms> sleeps that long before each file, so that tests can
// kill a run in the middle of a save.
std::string save_checkpoint(const std::string& checkpoints_dir, const ClipNetwork<float>& model,
                            const AdamW<float>& optimizer, const TrainState& state,
                            const ModelDirectoryExtras& extras);

// Deletes the checkpoints the policy does not keep (each renamed to a temporary name first, so
// that a crash in the middle of a deletion never leaves a partial step directory). The newest
// checkpoint is always kept.
void prune_checkpoints(const std::string& checkpoints_dir, const CheckpointPolicy& policy);

// The state of a checkpoint without loading any tensor (to set a resumed run up).
TrainState read_train_state(const std::string& checkpoint_dir);
// Loads the parameters and the optimizer moments of a checkpoint into `model` and `optimizer`
// (which must have the checkpoint's architecture: clip::Error otherwise), sets the optimizer's
// step counter, and returns the state (the caller restores the trainer's step and the loader).
TrainState load_checkpoint_into(const std::string& checkpoint_dir, ClipNetwork<float>& model,
                                AdamW<float>& optimizer);

// fsync of a file or directory by path; throws clip::Error naming it on failure.
void fsync_path(const std::string& path);

}  // namespace clip::train
