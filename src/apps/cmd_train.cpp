// `clip train`: contrastive training of a CLIP (ViT or ModifiedResNet image tower) from image-caption pairs (or a labelled set
// captioned through templates), from scratch or from any checkpoint clip loads, with
// checkpoints that resume bit for bit, validation (retrieval recall, zero-shot top-1),
// metrics.jsonl and curves.svg. See docs/training.md, section "clip train".
//
// Settings come from defaults <- (on resume) the checkpoint's configuration <- a JSON file
// (--config; keys are the long flag names) <- the command line.
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <csignal>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "apps/stop_signals.h"
#include "core/error.h"
#include "core/io.h"
#include "core/threads.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "eval/metrics.h"
#include "eval/zeroshot.h"
#include "model/config.h"
#include "model/weights.h"
#include "text/tokenizer.h"
#include "text/vocabulary.h"
#include "train/checkpoint.h"
#include "nn/clip_network.h"
#include "train/run.h"
#include "train/trainer.h"
#include "backend/comm.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace clip::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- settings: one table for the flags, the --config file and config.json ----

enum class Kind { Str, Int, Num, Flag };

struct Setting {
  const char* name;
  Kind kind;
  json def;
  const char* help;
  bool trajectory;  // changes what training computes: must match the checkpoint on resume
};

const std::vector<Setting>& settings() {
  static const std::vector<Setting> s = {
      // data
      {"train-data", Kind::Str, "", "Training pairs: CSV/TSV, WebDataset shards, or a labelled set (class folders, IDX, "
                                    "shards with .cls) captioned through --templates; several joined by '::'", true},
      {"csv-img-key", Kind::Str, "filepath", "CSV column of the image paths", true},
      {"csv-caption-key", Kind::Str, "title", "CSV column of the captions", true},
      {"csv-separator", Kind::Str, "", "CSV separator (default: tab for .tsv, comma otherwise; \"\\t\" for tab)", true},
      {"templates", Kind::Str, "", "Caption templates for labelled sets: one per line ({} or {c} = class name), or "
                                   "CLIP_benchmark JSON", true},
      // model
      {"model-config", Kind::Str, "", "Architecture of a new model: a name (ViT-B-32 ... RN50x64, cifar10-vit-tiny, "
                                      "cifar10-rn-tiny, cifar10-rn-small; `clip info --model-configs`) or a JSON model config (open_clip or Hugging Face)", true},
      {"init", Kind::Str, "", "Start from these weights (fine-tuning): any checkpoint clip loads", true},
      {"vocab", Kind::Str, "", "Tokenizer vocabulary (.txt.gz, vocab.json or folder); copied into the model "
                               "directories. Default: --init's, $CLIP_VOCAB, OpenAI's (installed with clip)", true},
      // optimisation
      {"batch-size", Kind::Int, 64, "Pairs per step (the contrastive batch)", true},
      {"micro-batch", Kind::Int, 0, "Rows per forward/backward pass (same loss, less memory; 0: whole batch)", true},
      {"epochs", Kind::Int, 0, "Train this many epochs (or give --steps)", true},
      {"steps", Kind::Int, 0, "Train this many steps (overrides --epochs)", true},
      {"lr", Kind::Num, 5e-4, "Peak learning rate (linear warm-up, then cosine decay to 0)", true},
      {"wd", Kind::Num, 0.2, "AdamW weight decay (not on gains, biases, embeddings, logit_scale)", true},
      {"beta1", Kind::Num, 0.9, "AdamW beta1", true},
      {"beta2", Kind::Num, 0.98, "AdamW beta2", true},
      {"eps", Kind::Num, 1e-6, "AdamW epsilon", true},
      {"warmup", Kind::Int, 0, "Warm-up steps", true},
      {"grad-clip", Kind::Num, 0.0, "Clip the global gradient norm to this (0: off)", true},
      {"seed", Kind::Int, 0, "Seed of the initialisation, data order and augmentation", true},
      {"threads", Kind::Int, 0, "Compute threads (0: all cores); bitwise resume needs the same count", false},
      {"workers", Kind::Int, 2, "Image decoding threads of the loader", false},
      {"recompute", Kind::Flag, false, "Recompute activations in backward (less memory, same gradients)", false},
      {"no-local-loss", Kind::Flag, false, "Under mpirun: every process computes the whole batch's loss (N x N memory) instead of its rows' (same gradients)", false},
      {"loss", Kind::Str, "clip", "clip (CLIP's softmax contrastive loss) or siglip (SigLIP's pairwise sigmoid loss; the model gets a learned logit_bias, init -10, and logit_scale starts at ln 10)", true},
      {"lock-image", Kind::Flag, false, "Freeze the image tower (locked-image tuning)", true},
      {"lock-text", Kind::Flag, false, "Freeze the text tower", true},
      {"augment-scale", Kind::Str, "0.9,1.0", "RandomResizedCrop area scale range MIN,MAX", true},
      {"hflip", Kind::Flag, false, "Random horizontal flips", true},
      {"color-jitter", Kind::Str, "0", "ColorJitter strengths B,C,S (brightness, contrast, saturation) or one for all "
                                       "three: factors uniform in [1-s, 1+s] (0: off)", true},
      {"color-jitter-p", Kind::Num, 0.8, "Probability of the colour jitter", true},
      {"grayscale-p", Kind::Num, 0.0, "Probability of a grayscale image (RandomGrayscale)", true},
      {"blur-p", Kind::Num, 0.0, "Probability of a Gaussian blur", true},
      {"blur-sigma", Kind::Str, "0.1,1.0", "Blur sigma range MIN,MAX in pixels", true},
      {"blur-kernel", Kind::Int, 5, "Blur kernel size (odd)", true},
      {"noise-p", Kind::Num, 0.0, "Probability of additive Gaussian noise", true},
      {"noise-sigma", Kind::Num, 0.1, "Largest noise sigma (of 0..1 intensities; each image draws one in [0, MAX])", true},
      {"no-augment", Kind::Flag, false, "No augmentation: the evaluation transform for training images", true},
      // output
      {"output", Kind::Str, "", "Run folder: config.json, metrics.jsonl, curves.svg, checkpoints/, model/", false},
      {"save-every", Kind::Int, 500, "Checkpoint every N steps (and at the end, and on Ctrl-C)", false},
      {"keep", Kind::Int, 3, "Keep the newest K checkpoints (0: all)", false},
      {"keep-every", Kind::Int, 0, "Also keep every checkpoint whose step is a multiple of N", false},
      {"log-every", Kind::Int, 10, "A metrics.jsonl line every N steps", false},
      {"resume", Kind::Str, "", "Continue a run: 'latest' (the newest checkpoint in --output; a new run if there is "
                                "none), a checkpoint directory, or a run folder", false},
      // validation
      {"val-data", Kind::Str, "", "Held-out image-caption pairs (CSV, shards): retrieval recall@1/5 both ways", false},
      {"zeroshot-data", Kind::Str, "", "Labelled set (class folders, IDX, shards): zero-shot top-1", false},
      {"zeroshot-templates", Kind::Str, "", "Templates for --zeroshot-data (default: \"a photo of a {}.\")", false},
      {"val-every", Kind::Int, 0, "Validate every N steps (0: only at the end)", false},
      {"val-limit", Kind::Int, 0, "Use only the first N samples of each validation set (0: all)", false},
  };
  return s;
}

// The allowed range of each numeric setting, checked once the flags, the --config file and the
// checkpoint are merged, so that every source gets the same short message naming the flag.
struct Range {
  const char* name;
  double min, max;
  bool min_open;  // min itself not allowed
  const char* rule;
};

void check_ranges(const json& cfg) {
  const double inf = std::numeric_limits<double>::infinity();
  const double cpus = double(logical_cpus());
  const Range ranges[] = {
      {"batch-size", 2, 1 << 24, false, "at least 2 (the loss contrasts the pairs of a batch)"},
      {"micro-batch", 0, 1 << 24, false, "0 (the whole batch) or more"},
      {"epochs", 0, 1e9, false, "0 or more"},
      {"steps", 0, 1e15, false, "0 or more"},
      {"lr", 0, 10, true, "a positive learning rate (e.g. 5e-4)"},
      {"wd", 0, inf, false, "0 or more"},
      {"beta1", 0, 1, false, "in [0, 1)"},
      {"beta2", 0, 1, false, "in [0, 1)"},
      {"eps", 0, 1, true, "a small positive number (e.g. 1e-6)"},
      {"warmup", 0, 1e15, false, "0 or more"},
      {"grad-clip", 0, inf, false, "0 (off) or more"},
      {"seed", 0, 9e15, false, "0 or more"},
      {"threads", 0, cpus, false, nullptr},
      {"workers", 1, 256, false, "1..256 decoding threads"},
      {"save-every", 0, 1e15, false, "0 (only at the end) or more"},
      {"keep", 0, 1e9, false, "0 (all) or more"},
      {"keep-every", 0, 1e15, false, "0 or more"},
      {"log-every", 1, 1e15, false, "1 or more"},
      {"val-every", 0, 1e15, false, "0 (only at the end) or more"},
      {"val-limit", 0, 1e15, false, "0 (all) or more"},
  };
  for (const Range& r : ranges) {
    const double v = cfg.at(r.name).get<double>();
    const bool upper_open = std::string(r.name) == "beta1" || std::string(r.name) == "beta2";
    const bool ok = (r.min_open ? v > r.min : v >= r.min) && (upper_open ? v < r.max : v <= r.max);
    if (ok) continue;
    std::string rule = r.rule ? r.rule
                              : "1.." + std::to_string(int(cpus)) + " (this machine has " + std::to_string(int(cpus)) +
                                    " logical CPUs), or 0 for all";
    throw Error("--" + std::string(r.name) + " " + cfg.at(r.name).dump() + ": must be " + rule);
  }
}

const Setting* find_setting(const std::string& name) {
  for (const auto& s : settings())
    if (name == s.name) return &s;
  return nullptr;
}

// A value for setting `s` from JSON (config file, checkpoint) with type checks.
json coerce(const Setting& s, const json& v, const std::string& where) {
  auto bad = [&](const char* what) {
    return Error(where + ": '" + s.name + "' must be " + what + ", got " + v.dump());
  };
  switch (s.kind) {
    case Kind::Str:
      if (v.is_string()) return v;
      if (v.is_number()) return v.dump();
      throw bad("a string");
    case Kind::Int:
      if (v.is_number_integer()) return v.get<int64_t>();
      if (v.is_number_float() && std::abs(v.get<double>()) < 9e15 && v.get<double>() == std::floor(v.get<double>()))
        return int64_t(v.get<double>());
      throw bad("an integer");
    case Kind::Num:
      if (v.is_number()) return v.get<double>();
      throw bad("a number");
    case Kind::Flag:
      if (v.is_boolean()) return v;
      throw bad("true or false");
  }
  return v;
}

// A value for setting `s` from a command-line string.
json from_flag(const Setting& s, const std::string& text) {
  const std::string where = std::string("--") + s.name;
  try {
    switch (s.kind) {
      case Kind::Str: return text;
      case Kind::Int: {
        size_t used = 0;
        const long long v = std::stoll(text, &used);
        if (used != text.size()) break;
        return int64_t(v);
      }
      case Kind::Num: {
        size_t used = 0;
        const double v = std::stod(text, &used);
        if (used != text.size()) break;
        return v;
      }
      case Kind::Flag: return text == "true" || text == "1" || text.empty();
    }
  } catch (const std::exception&) {
  }
  throw Error(where + ": not a valid " + (s.kind == Kind::Int ? "integer" : "number") + ": '" + text + "'");
}

struct Cli {
  std::map<std::string, std::string> values;  // raw strings of the options
  std::map<std::string, bool> flags;
  std::map<std::string, CLI::Option*> options;
  std::string config_file;
};

// ---- model configuration, vocabulary ----

// "MIN,MAX" with 0 < MIN <= MAX <= max_value; `rule` names the flag and the bound in the error.
std::pair<double, double> parse_min_max(const std::string& s, double max_value, const std::string& rule) {
  const auto comma = s.find(',');
  try {
    if (comma != std::string::npos) {
      const double a = std::stod(s.substr(0, comma)), b = std::stod(s.substr(comma + 1));
      if (a > 0 && a <= b && b <= max_value) return {a, b};
    }
  } catch (const std::exception&) {
  }
  throw Error(rule + ", got '" + s + "'");
}

std::pair<double, double> parse_range(const std::string& s) {
  return parse_min_max(s, 1.0, "--augment-scale: expected MIN,MAX with 0 < MIN <= MAX <= 1");
}

// "B,C,S" or one strength for all three ColorJitter factors.
std::array<double, 3> parse_jitter(const std::string& s) {
  std::array<double, 3> v{};
  size_t n = 0, start = 0;
  try {
    while (n < 3) {
      const size_t comma = s.find(',', start);
      size_t used = 0;
      const std::string part = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      v[n++] = std::stod(part, &used);
      if (used != part.size()) n = 4;
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } catch (const std::exception&) {
    n = 4;
  }
  if (n == 1) v[1] = v[2] = v[0];
  if ((n == 1 || n == 3) && v[0] >= 0 && v[1] >= 0 && v[2] >= 0) return v;
  throw Error("--color-jitter: expected S or B,C,S (strengths >= 0), got '" + s + "'");
}

char parse_separator(const std::string& s) {
  if (s.empty()) return 0;
  if (s == "\\t" || s == "\t" || s == "tab") return '\t';
  if (s.size() == 1) return s[0];
  throw Error("--csv-separator: expected one character, got '" + s + "'");
}

// ---- validation ----

class Validation {
 public:
  Validation(const json& cfg, const Tokenizer& tok, const PreprocessConfig& pp, int batch)
      : tok_(tok), pp_(pp), batch_(std::max(1, batch)) {
    data::DatasetOptions o;
    o.limit = cfg["val-limit"].get<int64_t>();
    const std::string val = cfg["val-data"], zs = cfg["zeroshot-data"];
    if (!val.empty()) {
      val_ = data::open_dataset(val, o);
      if (!val_->has_captions()) throw Error(val + ": --val-data needs captions for every image (retrieval)");
      for (size_t i = 0; i < val_->samples.size(); ++i)
        for (const auto& c : val_->samples[i].captions) {
          val_texts_.push_back(c);
          val_text_image_.push_back(int64_t(i));
        }
    }
    if (!zs.empty()) {
      zs_ = data::open_dataset(zs, o);
      if (!zs_->has_labels()) throw Error(zs + ": --zeroshot-data needs a class label for every image");
      if (zs_->classnames.empty()) throw Error(zs + ": --zeroshot-data has no class names (use class folders)");
      for (auto name : zs_->classnames) {
        std::replace(name.begin(), name.end(), '_', ' ');
        classnames_.push_back(name);
      }
      const std::string t = cfg["zeroshot-templates"];
      templates_ = t.empty() ? std::vector<std::string>{"a photo of a {}."}
                             : eval::load_prompt_list(t, "templates", zs_->name);
      for (auto& tm : templates_) (void)eval::format_template(tm, "x");
    } else if (!std::string(cfg["zeroshot-templates"]).empty()) {
      throw Error("--zeroshot-templates needs --zeroshot-data");
    }
  }
  bool enabled() const { return val_ || zs_; }

  std::vector<std::pair<std::string, double>> operator()(nn::ClipNetwork<float>& m) {
    // Validation runs what `clip embed` runs on the saved checkpoint: the inference forward
    // (nn::ClipNetwork::encode_*: no saved activations, the linear layers prepared from the
    // current parameters; a ResNet tower with its running statistics), so a checkpoint scores
    // the same here and in `clip eval`. The preparation is dropped before training goes on.
    const nn::InferencePreparation<float> prepared(m);
    std::vector<std::pair<std::string, double>> out;
    const int dim = m.config().embed_dim;
    if (val_) {
      const std::vector<float> img = image_features(m, *val_);
      std::vector<float> txt;
      encode_texts(m, val_texts_, txt);
      const eval::RetrievalMetrics r = eval::retrieval_metrics(img.data(), int64_t(val_->size()), txt.data(),
                                                               int64_t(val_texts_.size()), dim, val_text_image_, {1, 5});
      out.emplace_back("val/i2t_r1", r.image_to_text.recall.at(1));
      out.emplace_back("val/i2t_r5", r.image_to_text.recall.at(5));
      out.emplace_back("val/t2i_r1", r.text_to_image.recall.at(1));
      out.emplace_back("val/t2i_r5", r.text_to_image.recall.at(5));
    }
    if (zs_) {
      const eval::ClassEmbeddings ce = eval::build_class_embeddings(
          classnames_, templates_,
          [this, &m](const std::vector<std::string>& texts, std::vector<float>& f) {
            encode_texts(m, texts, f);
            return m.config().embed_dim;
          },
          batch_);
      const std::vector<float> img = image_features(m, *zs_);
      const std::vector<float> logits = eval::zeroshot_logits(img.data(), int64_t(zs_->size()), dim, ce);
      std::vector<int> labels;
      for (const auto& s : zs_->samples) labels.push_back(s.label);
      const auto cm = eval::classification_metrics(logits.data(), int64_t(zs_->size()), ce.num_classes, labels.data());
      out.emplace_back("zeroshot/top1", cm.top1);
    }
    return out;
  }

 private:
  std::vector<float> image_features(nn::ClipNetwork<float>& m, const data::Dataset& d) {
    const int S = pp_.image_size, dim = m.config().embed_dim;
    const size_t per = size_t(3) * S * S;
    const int64_t n = int64_t(d.size());
    std::vector<float> px(per * size_t(batch_)), out(size_t(n) * dim);
    for (int64_t b0 = 0; b0 < n; b0 += batch_) {
      const int nb = int(std::min<int64_t>(batch_, n - b0));
      std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
      for (int i = 0; i < nb; ++i) {
        try {
          preprocess_image(d.load_image(size_t(b0 + i)), pp_, px.data() + per * size_t(i));
        } catch (...) {
#pragma omp critical
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
      m.encode_images(px.data(), nb, out.data() + size_t(b0) * dim);
    }
    return out;
  }

  void encode_texts(nn::ClipNetwork<float>& m, const std::vector<std::string>& texts, std::vector<float>& out) {
    const int ctx = m.config().text.context_length, dim = m.config().embed_dim;
    out.assign(texts.size() * size_t(dim), 0.f);
    for (size_t i = 0; i < texts.size(); i += size_t(batch_)) {
      const size_t nb = std::min(texts.size() - i, size_t(batch_));
      const std::vector<std::string> chunk(texts.begin() + long(i), texts.begin() + long(i + nb));
      const std::vector<int32_t> ids = tok_.tokenize(chunk, ctx, /*truncate=*/true);
      m.encode_texts(ids.data(), int64_t(nb), ctx, out.data() + i * size_t(dim));
    }
  }

  const Tokenizer& tok_;
  PreprocessConfig pp_;
  int batch_;
  std::optional<data::Dataset> val_, zs_;
  std::vector<std::string> val_texts_, classnames_, templates_;
  std::vector<int64_t> val_text_image_;
};

// ---- the loader as a batch source ----

class LoaderSource : public train::BatchSource {
 public:
  explicit LoaderSource(data::PairLoader& loader) : loader_(loader) {}
  data::Batch next() override { return loader_.next(); }
  void seek(const data::LoaderPosition& p) override { loader_.seek(p); }

 private:
  data::PairLoader& loader_;
};

void warn(const std::string& s) { std::fprintf(stderr, "clip train: warning: %s\n", s.c_str()); }

// ---- the command ----

void run_train(Cli& cli) {
  // 1. Resolve the settings: defaults <- checkpoint <- --config file <- flags.
  json cfg = json::object();
  for (const auto& s : settings()) cfg[s.name] = s.def;
  auto given = [&](const char* name) { return cli.options.count(name) && cli.options.at(name)->count() > 0; };
  auto flag_value = [&](const Setting& s) {
    return s.kind == Kind::Flag ? json(cli.flags.at(s.name)) : from_flag(s, cli.values.at(s.name));
  };
  json file_cfg = json::object();
  if (!cli.config_file.empty()) {
    try {
      file_cfg = json::parse(read_text_file(cli.config_file));
    } catch (const json::exception& e) {
      throw Error(cli.config_file + ": invalid JSON: " + e.what());
    }
    if (!file_cfg.is_object()) throw Error(cli.config_file + ": expected a JSON object of flag names and values");
    for (auto it = file_cfg.begin(); it != file_cfg.end(); ++it) {
      std::string key = it.key();
      if (key.rfind("--", 0) == 0) key = key.substr(2);
      std::replace(key.begin(), key.end(), '_', '-');
      const Setting* s = find_setting(key);
      if (!s || key == "config") throw Error(cli.config_file + ": unknown setting '" + it.key() + "'");
      file_cfg[it.key()] = coerce(*s, it.value(), cli.config_file);
    }
  }
  auto setting_from_file = [&](const Setting& s) -> std::optional<json> {
    for (auto it = file_cfg.begin(); it != file_cfg.end(); ++it) {
      std::string key = it.key();
      if (key.rfind("--", 0) == 0) key = key.substr(2);
      std::replace(key.begin(), key.end(), '_', '-');
      if (key == s.name) return it.value();
    }
    return std::nullopt;
  };
  // --output and --resume first: they locate the checkpoint whose settings are the base.
  for (const char* k : {"output", "resume"}) {
    const Setting& s = *find_setting(k);
    if (auto v = setting_from_file(s)) cfg[k] = *v;
    if (given(k)) cfg[k] = flag_value(s);
  }
  const std::string resume = cfg["resume"];
  std::string output = cfg["output"];
  std::string checkpoint;  // the checkpoint resumed from ("" : a new run)
  if (!resume.empty()) {
    if (resume == "latest") {
      if (output.empty()) throw Error("--resume latest needs --output (the run folder)");
      if (auto l = train::latest_checkpoint((fs::path(output) / "checkpoints").string())) checkpoint = *l;
    } else {
      std::error_code ec;
      if (!fs::is_directory(resume, ec)) throw Error(resume + ": --resume: no such checkpoint or run folder");
      if (fs::is_regular_file(fs::path(resume) / "train_state.safetensors", ec)) {
        checkpoint = resume;
      } else {
        for (const fs::path& ckdir : {fs::path(resume) / "checkpoints", fs::path(resume)})
          if (auto l = train::latest_checkpoint(ckdir.string())) {
            checkpoint = *l;
            break;
          }
        if (checkpoint.empty()) throw Error(resume + ": --resume: no checkpoint in this folder");
      }
      if (output.empty()) output = fs::path(checkpoint).parent_path().parent_path().string();
    }
  }
  json saved = json::object();
  if (!checkpoint.empty()) {
    const train::TrainState st = train::read_train_state(checkpoint);
    saved = json::parse(st.config_json);
    for (auto it = saved.begin(); it != saved.end(); ++it) {
      const Setting* s = find_setting(it.key());
      if (s) cfg[it.key()] = coerce(*s, it.value(), checkpoint);
    }
  }
  for (const auto& s : settings()) {
    if (auto v = setting_from_file(s)) cfg[s.name] = *v;
    if (given(s.name)) cfg[s.name] = flag_value(s);
  }
  cfg["output"] = output;
  cfg["resume"] = resume;
  if (output.empty()) throw Error("give --output (the run folder)");
  if (!checkpoint.empty()) {
    std::string diffs;
    for (const auto& s : settings())
      if (s.trajectory && saved.contains(s.name) && coerce(s, saved[s.name], checkpoint) != cfg[s.name])
        diffs += std::string("\n  --") + s.name + ": " + saved[s.name].dump() + " in the checkpoint, " +
                 cfg[s.name].dump() + " now";
    if (!diffs.empty())
      throw Error(checkpoint + ": these settings differ from the run being resumed (an exact resume needs the "
                  "same ones; start a new run with --init to change them):" + diffs);
  }

  check_ranges(cfg);
  {  // the run folder first: a mistyped or read-only path fails before any loading
    std::error_code ec;
    fs::create_directories(output, ec);
    if (ec || !fs::is_directory(output, ec)) throw Error("--output " + output + ": cannot create this folder");
    check_output_file((fs::path(output) / "config.json").string(), "--output");
  }

  // 2. Threads, and the processes of a data-parallel run (mpirun -np N clip train ...).
  const int threads = int(cfg["threads"].get<int64_t>());
  if (threads > 0) set_num_threads(threads);
  const int used_threads = omp_get_max_threads();
  Comm& comm = Comm::world();
  {
    const int64_t global_batch = cfg["batch-size"].get<int64_t>();
    if (global_batch % comm.size() != 0)
      throw Error("--batch-size " + std::to_string(global_batch) + " (the global batch) does not split evenly over " +
                  std::to_string(comm.size()) + " processes");
    if (comm.distributed() && comm.rank() == 0)
      std::fprintf(stderr, "clip train: %d processes (%s), %lld samples each per step of %lld\n", comm.size(),
                   comm.library().c_str(), static_cast<long long>(global_batch / comm.size()),
                   static_cast<long long>(global_batch));
  }

  // 3. Architecture, tokenizer, preprocessing, initial weights.
  ModelConfig mc;
  std::optional<LoadedCheckpoint> init;
  std::optional<Tokenizer> tok;
  train::ModelDirectoryExtras extras;
  std::string vocab_source;
  if (!checkpoint.empty()) {
    mc = load_model_config((fs::path(checkpoint) / "open_clip_config.json").string());
    vocab_source = checkpoint;
    extras.preprocess = load_preprocess_config(checkpoint);
  } else {
    const std::string init_path = cfg["init"], mcfg = cfg["model-config"];
    if (!init_path.empty()) {
      LoadOptions lo;
      if (!mcfg.empty()) {
        std::error_code ec;
        if (!fs::is_regular_file(mcfg, ec)) throw Error("--model-config with --init must be a JSON file");
        lo.config_path = mcfg;
      }
      init = load_checkpoint(init_path, lo);
      mc = init->config;
      extras.preprocess.image_size = mc.vision.image_size;
      if (!init->model_dir.empty()) {
        try {
          extras.preprocess = load_preprocess_config(init->model_dir);
        } catch (const Error&) {
          // no preprocessing config in the folder: CLIP's defaults
        }
      }
    } else {
      if (mcfg.empty()) throw Error("give --model-config (a new model) or --init (fine-tuning)");
      try {
        mc = resolve_model_config(mcfg);
      } catch (const Error& e) {
        throw Error(std::string("--model-config: ") + e.what());
      }
      extras.preprocess.image_size = mc.vision.image_size;
    }
    vocab_source = cfg["vocab"].get<std::string>();
    if (vocab_source.empty() && init && !init->model_dir.empty()) {
      try {
        (void)Tokenizer::from_directory(init->model_dir);
        vocab_source = init->model_dir;
      } catch (const Error&) {
      }
    }
    if (vocab_source.empty()) vocab_source = vocabulary_or_default("");
  }
  if (extras.preprocess.image_size != mc.vision.image_size)
    throw Error("the preprocessing config's image size (" + std::to_string(extras.preprocess.image_size) +
                ") differs from the model's (" + std::to_string(mc.vision.image_size) + ")");
  tok.emplace(load_tokenizer(vocab_source));
  extras.vocab_files = train::vocabulary_files(vocab_source);
  if (tok->vocab_size() > mc.text.vocab_size)
    throw Error(vocab_source + ": the tokenizer has " + std::to_string(tok->vocab_size()) +
                " tokens but the model's token embedding has " + std::to_string(mc.text.vocab_size) + " rows");

  const std::string loss = cfg["loss"].get<std::string>();
  if (loss != "clip" && loss != "siglip") throw Error("--loss " + loss + ": expected clip or siglip");
  if (loss == "siglip" && !mc.init_logit_bias) mc.init_logit_bias = -10.0f;  // open_clip's SigLIP init
  if (loss == "clip" && mc.init_logit_bias)
    throw Error("the model has a logit_bias (a SigLIP model): train it with --loss siglip");
  nn::ClipNetwork<float> model(mc);
  if (checkpoint.empty()) {
    model.init_openai(uint64_t(cfg["seed"].get<int64_t>()));
    if (init) model.load(init->tensors, /*ignore_unknown=*/true);
  }
  init.reset();
  model.set_recompute(cfg["recompute"].get<bool>());

  // 4. Data.
  const std::string train_data = cfg["train-data"];
  if (train_data.empty()) throw Error("give --train-data");
  const int64_t batch = cfg["batch-size"].get<int64_t>();
  if (batch < 2) throw Error("--batch-size must be at least 2 (the loss contrasts the pairs of a batch)");
  data::PairSourceOptions so;
  so.csv_img_key = cfg["csv-img-key"].get<std::string>();
  so.csv_caption_key = cfg["csv-caption-key"].get<std::string>();
  so.csv_separator = parse_separator(cfg["csv-separator"].get<std::string>());
  const std::string templates = cfg["templates"];
  if (!templates.empty())
    so.templates = eval::load_prompt_list(templates, "templates", fs::path(train_data).filename().string());
  data::LoaderOptions lo;
  lo.preprocess = extras.preprocess;
  lo.augment = !cfg["no-augment"].get<bool>();
  std::tie(lo.crop_scale_min, lo.crop_scale_max) = parse_range(cfg["augment-scale"].get<std::string>());
  lo.horizontal_flip = cfg["hflip"].get<bool>();
  {
    data::PhotometricOptions& ph = lo.photometric;
    const auto jitter = parse_jitter(cfg["color-jitter"].get<std::string>());
    ph.brightness = jitter[0];
    ph.contrast = jitter[1];
    ph.saturation = jitter[2];
    ph.jitter_p = cfg["color-jitter-p"].get<double>();
    ph.grayscale_p = cfg["grayscale-p"].get<double>();
    ph.blur_p = cfg["blur-p"].get<double>();
    const auto sigma = parse_min_max(cfg["blur-sigma"].get<std::string>(), std::numeric_limits<double>::infinity(),
                                     "--blur-sigma: expected MIN,MAX with 0 < MIN <= MAX");
    ph.blur_sigma = {sigma.first, sigma.second};
    ph.blur_kernel = int(cfg["blur-kernel"].get<int64_t>());
    ph.noise_p = cfg["noise-p"].get<double>();
    ph.noise_sigma_max = cfg["noise-sigma"].get<double>();
    ph.validate(lo.preprocess.image_size);  // names the flag before any data is read, --no-augment too
  }
  lo.batch_size = batch;
  lo.context_length = mc.text.context_length;
  lo.seed = uint64_t(cfg["seed"].get<int64_t>());
  lo.workers = int(std::max<int64_t>(1, cfg["workers"].get<int64_t>()));
  data::PairLoader loader(train_data, so, *tok, lo);
  LoaderSource source(loader);

  int64_t total = cfg["steps"].get<int64_t>();
  const int64_t epoch_size = loader.stats().epoch_size;
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  if (total <= 0) {
    const int64_t epochs = cfg["epochs"].get<int64_t>();
    if (epochs <= 0) throw Error("give --steps or --epochs");
    if (steps_per_epoch < 0) throw Error(train_data + ": the epoch size is unknown (streamed shards): give --steps");
    if (steps_per_epoch == 0)
      throw Error(train_data + ": " + std::to_string(epoch_size) + " samples do not fill one batch of " +
                  std::to_string(batch));
    total = epochs * steps_per_epoch;
  }

  // 5. Optimiser and schedule.
  train::TrainConfig tc;
  tc.adamw.lr = cfg["lr"];
  tc.adamw.weight_decay = cfg["wd"];
  tc.adamw.beta1 = cfg["beta1"];
  tc.adamw.beta2 = cfg["beta2"];
  tc.adamw.eps = cfg["eps"];
  tc.warmup_steps = cfg["warmup"];
  tc.total_steps = total;
  tc.max_grad_norm = cfg["grad-clip"];
  tc.micro_batch = cfg["micro-batch"];
  tc.freeze_image = cfg["lock-image"];
  tc.freeze_text = cfg["lock-text"];
  tc.comm = &comm;
  tc.local_loss = !cfg["no-local-loss"].get<bool>();
  train::Trainer<float> trainer(model, tc);

  // 6. Validation.
  const int eval_batch = int(std::min<int64_t>(tc.micro_batch > 0 ? tc.micro_batch : batch, 256));
  Validation validation(cfg, *tok, extras.preprocess, eval_batch);

  // 7. Run.
  json resolved = cfg;
  resolved.erase("resume");
  resolved["derived"] = {{"total_steps", total},
                         {"steps_per_epoch", steps_per_epoch},
                         {"epoch_size", epoch_size},
                         {"threads_used", used_threads},
                         {"world_size", comm.size()},
                         {"model", describe_model_config(mc)},
                         {"parameters", model.num_params()},
                         {"vocabulary", vocab_source}};
  if (!checkpoint.empty() && saved.contains("derived") && saved["derived"].contains("threads_used") &&
      saved["derived"]["threads_used"] != used_threads)
    warn("the run being resumed used " + saved["derived"]["threads_used"].dump() + " threads, this one " +
         std::to_string(used_threads) + ": the result will not be bitwise equal to an uninterrupted run");
  train::RunOptions ro;
  ro.output = output;
  ro.total_steps = total;
  ro.save_every = cfg["save-every"];
  ro.keep.keep = int(cfg["keep"].get<int64_t>());
  ro.keep.keep_every = cfg["keep-every"];
  ro.log_every = std::max<int64_t>(1, cfg["log-every"].get<int64_t>());
  ro.val_every = cfg["val-every"];
  ro.seed = uint64_t(cfg["seed"].get<int64_t>());
  ro.config_json = resolved.dump();
  ro.model_extras = extras;
  ro.comm = &comm;
  train::TrainRun run(model, trainer, source, ro);
  run.start(checkpoint);
  if (!resume.empty() && checkpoint.empty())
    std::fprintf(stderr, "clip train: no checkpoint in %s: starting a new run\n", output.c_str());
  train::Validator validator;
  if (validation.enabled()) validator = [&validation](nn::ClipNetwork<float>& m) { return validation(m); };
  const std::atomic<int>& stop = enable_graceful_stop();
  const train::RunResult r = run.run(&stop, validator);
  // The graceful stop stays on until exit: a signal that lands after the last step (while the
  // result is printed) then changes nothing, instead of killing a finished run.
  if (comm.rank() != 0) {  // rank 0 reports
    if (!r.finished) throw CLI::RuntimeError(128 + std::max(stop.load(), 2));
    return;
  }
  if (!r.finished) {
    std::printf("stopped at step %lld of %lld; checkpoint %s\n", static_cast<long long>(r.step),
                static_cast<long long>(total), r.checkpoint.c_str());
    std::fflush(stdout);
    throw CLI::RuntimeError(128 + stop.load());
  }
  std::printf("trained %lld steps; model: %s\n", static_cast<long long>(r.step), r.model_dir.c_str());
}

const CommandRegistrar train_command("train", 67, [](CLI::App& root) {
  auto cli = std::make_shared<Cli>();
  CLI::App* cmd = root.add_subcommand(
      "train", "Train a CLIP, ViT or ModifiedResNet image tower (contrastive loss) from image-caption pairs, with exact resume (docs/training.md)");
  cmd->add_option("--config", cli->config_file, "JSON file of settings (keys: the long flag names); flags override it")
      ->check(CLI::ExistingFile);
  for (const auto& s : settings()) {
    const std::string flag = std::string("--") + s.name;
    std::string help = s.help;
    if (s.kind != Kind::Flag && !(s.def.is_string() && s.def.get<std::string>().empty()))
      help += " [" + (s.def.is_string() ? s.def.get<std::string>() : s.def.dump()) + "]";
    if (s.kind == Kind::Flag) {
      cli->options[s.name] = cmd->add_flag(flag, cli->flags[s.name], help);
    } else {
      CLI::Option* o = cmd->add_option(flag, cli->values[s.name], help);
      o->type_name(s.kind == Kind::Int ? "INT" : s.kind == Kind::Num ? "NUMBER" : "TEXT");
      cli->options[s.name] = o;
    }
  }
  cmd->footer(
      "Examples:\n"
      "  clip train --train-data pairs.csv --model-config ViT-B-32 --batch-size 256 --epochs 10 --output runs/b32\n"
      "  clip train --config recipes/cifar10/rn-small.json --output runs/cifar10 --resume latest\n"
      "  mpirun -np 4 clip train <the same flags>     data parallel: --batch-size is the global batch, split over\n"
      "      the processes; rank 0 writes the folder; --resume latest works at any process count (docs/training.md)\n"
      "Ctrl-C (or SIGTERM) stops after the current step with a checkpoint; --resume latest continues it exactly.\n"
      "Piped, a line per --log-every steps; on a terminal, a progress line.");
  cmd->callback([cli] { run_train(*cli); });
});

}  // namespace
}  // namespace clip::app
