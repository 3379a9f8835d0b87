// `clip eval zeroshot | linear-probe | retrieval | robustness | report`: the CLIP paper's
// evaluations for any model clip can load, written as CLIP_benchmark-style JSON results
// (one per model, dataset and task) plus a readable table on the terminal. See docs/eval.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"
#include "core/io.h"
#include "data/datasets.h"
#include "eval/features.h"
#include "eval/linear_probe.h"
#include "eval/metrics.h"
#include "eval/results.h"
#include "eval/zeroshot.h"
#include "model/clip_model.h"
#include "model/loaded_model.h"
#include "model/weights.h"
#include "text/tokenizer.h"
#include "text/vocabulary.h"
#include "vision/preprocess.h"

namespace clip::app {
namespace {

namespace fs = std::filesystem;
using namespace clip::eval;
using namespace clip::data;

// ---- options shared by the model-based commands ----
struct Common {
  std::string model, model_name, pretrained, vocab, output, cache = ".clip_cache/features", root;
  std::string dataset_name, precision = "fp32";
  int batch_size = 64, threads = 0;
  int64_t limit = 0;
  uint64_t limit_seed = 0;
  bool no_cache = false, json = false, truncate = false;
};

void add_model_options(CLI::App* cmd, Common& c, bool model_required) {
  auto* m = cmd->add_option("-m,--model", c.model, "Model: a .safetensors file or a model directory");
  if (model_required) m->required();
  cmd->add_option("--model-name", c.model_name, "Model name in results (default: the model's file or folder name)");
  cmd->add_option("--pretrained", c.pretrained, "Pretrained tag in results (CLIP_benchmark's \"pretrained\")");
  cmd->add_option("--vocab", c.vocab, "Tokenizer vocabulary (.txt.gz, vocab.json or folder); default: the model's, "
                                      "$CLIP_VOCAB, then OpenAI's, installed with clip");
  cmd->add_option("-b,--batch-size", c.batch_size, "Images or texts per forward pass")
      ->check(CLI::Range(1, 4096).description("1..4096"))
      ->capture_default_str();
  cmd->add_option("--threads", c.threads, "Threads (0 = all cores)")->check(threads_range())->capture_default_str();
  add_precision_option(cmd, c.precision);
  cmd->add_flag("--truncate", c.truncate, "Cut texts (prompts, captions) longer than the model's context "
                                          "(default: an error naming them)");
  cmd->add_flag("--json", c.json, "Print each result as one JSON line on stdout instead of the tables");
  cmd->add_option("--cache", c.cache, "Feature cache folder (.npy keyed by model, dataset and preprocessing)");
  cmd->add_flag("--no-cache", c.no_cache, "Do not read or write cached features");
  cmd->add_option("--root", c.root, "Folder that a CSV's relative image paths resolve against (default: the CSV's)");
  cmd->add_option("--limit", c.limit, "Use N samples of each dataset: a class-stratified (or uniform) random "
                                      "subset, seeded by --limit-seed")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--limit-seed", c.limit_seed, "Seed of the --limit subset")->capture_default_str();
  cmd->add_option("--dataset-name", c.dataset_name, "Dataset name in results and for prompt lookup");
  cmd->add_option("-o,--output", c.output, "Write the JSON result(s) into this folder (or this .json file for a "
                                           "single result); default: print only");
}

// Before any work: the results folder can be created (or the .json file written).
void check_output(const Common& c) {
  if (c.output.empty()) return;
  if (c.output.size() > 5 && c.output.compare(c.output.size() - 5, 5, ".json") == 0) {
    check_output_file(c.output, "-o");
    return;
  }
  std::error_code ec;
  fs::create_directories(c.output, ec);
  if (ec || !fs::is_directory(c.output, ec)) throw Error("-o " + c.output + ": cannot create this folder");
  check_output_file((fs::path(c.output) / "x.json").string(), "-o");
}

std::string result_path(const Common& c, const EvalResult& r, const std::string& suffix = "") {
  if (suffix.empty() && c.output.size() > 5 && c.output.compare(c.output.size() - 5, 5, ".json") == 0) return c.output;
  std::string p = default_result_path(c.output, r);
  if (!suffix.empty()) p = p.substr(0, p.size() - 5) + suffix + ".json";
  return p;
}

// Tables and notes: stdout, or with --json stderr (stdout then holds only the JSON lines).
FILE* g_text = stdout;

void save(const Common& c, const EvalResult& r, const std::string& suffix = "") {
  if (c.json) print_json_line(to_json(r));
  if (c.output.empty()) return;
  const std::string path = result_path(c, r, suffix);
  write_result(path, r);
  if (!c.json) std::fprintf(g_text, "wrote %s\n", path.c_str());
}

// What every model-based command does first: the flags that apply globally, then the output
// checked before any work.
void begin(const Common& c) {
  g_text = c.json ? stderr : stdout;
  if (c.threads > 0) set_num_threads(c.threads);
  check_output(c);
}

// ---- the model, its tokenizer and preprocessing (model/loaded_model.h, as clip::Model::load) ----
struct ModelContext {
  std::unique_ptr<ClipModel> model;
  std::optional<Tokenizer> tokenizer;
  PreprocessConfig preprocess;
  std::string key;   // identity for the feature cache
  std::string name;  // for results
  int dim = 0;
};

ModelContext load_model(const Common& c, bool need_text) {
  ModelContext m;
  LoadedModel loaded = clip::load_model(c.model, c.vocab, "", parse_precision(c.precision));
  m.model = std::move(loaded.model);
  const auto& ck = m.model->checkpoint();
  m.dim = m.model->embed_dim();
  m.preprocess = loaded.preprocess;
  m.key = file_identity(ck.weights_path.empty() ? c.model : ck.weights_path) + (c.precision == "fp32" ? "" : "|" + c.precision);
  m.name = c.model_name;
  if (m.name.empty()) {
    fs::path p = fs::path(c.model).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    m.name = p.stem().string();
    // "model.safetensors" names nothing: use its folder's name.
    if ((m.name == "model" || m.name == "open_clip_model") && !p.parent_path().filename().empty())
      m.name = p.parent_path().filename().string();
  }
  if (need_text) {
    if (!loaded.tokenizer) throw Error(loaded.tokenizer_error);
    m.tokenizer = std::move(*loaded.tokenizer);
  }
  return m;
}

TextEncoder text_encoder(ModelContext& m, int batch, bool truncate) {
  return [&m, batch, truncate](const std::vector<std::string>& texts, std::vector<float>& out) {
    size_t truncated = 0;
    const int ctx = m.model->context_length();
    out.assign(texts.size() * size_t(m.dim), 0.0f);
    for (size_t i = 0; i < texts.size(); i += size_t(batch)) {
      const size_t nb = std::min(texts.size() - i, size_t(batch));
      std::vector<std::string> chunk(texts.begin() + long(i), texts.begin() + long(i + nb));
      std::vector<int64_t> cut;
      auto ids = m.tokenizer->tokenize(chunk, ctx, truncate, &cut);
      truncated += cut.size();
      m.model->encode_texts(ids.data(), int(nb), ctx, out.data() + i * size_t(m.dim));
    }
    if (truncated)
      std::fprintf(stderr, "clip eval: note: %zu of %zu texts were longer than %d tokens and were truncated\n",
                   truncated, texts.size(), ctx);
    return m.dim;
  };
}

std::vector<float> dataset_features(ModelContext& m, const Common& c, const Dataset& d) {
  FeatureOptions fo;
  fo.batch_size = c.batch_size;
  fo.cache_dir = c.no_cache ? "" : c.cache;
  fo.model_key = m.key;
  FeatureTiming timing;
  fo.timing = &timing;
  auto features = image_features(d, m.preprocess, m.dim, [&m](const float* px, int b, float* out) {
    m.model->encode_images(px, b, out);
  }, fo);
  // Where the time went: is evaluation bound by the encoder or by the input pipeline?
  const double total = timing.pipeline_s + timing.encoder_s;
  if (timing.images > 0 && total > 0)
    std::fprintf(stderr, "%s: %lld images in %.1f s (%.0f images/s): decode+preprocess %.1f s (%.0f %%), encoder %.1f s (%.0f %%)\n",
                 d.name.c_str(), static_cast<long long>(timing.images), total, double(timing.images) / total,
                 timing.pipeline_s, 100 * timing.pipeline_s / total, timing.encoder_s, 100 * timing.encoder_s / total);
  return features;
}

Dataset open(const Common& c, const std::string& spec) {
  DatasetOptions o;
  o.root = c.root;
  o.limit = c.limit;
  o.limit_seed = c.limit_seed;
  Dataset d = open_dataset(spec, o);
  if (!d.subset_note.empty()) std::fprintf(stderr, "clip eval: --limit: %s: %s\n", spec.c_str(), d.subset_note.c_str());
  return d;
}

std::vector<int> labels_of(const Dataset& d) {
  if (!d.has_labels()) throw Error(d.source + ": some samples have no class label");
  std::vector<int> y;
  for (auto& s : d.samples) y.push_back(s.label);
  return y;
}

nlohmann::json classification_json(const ClassificationMetrics& m) {
  return {{"acc1", metric_value(m.top1)}, {"acc5", metric_value(m.top5)},
          {"mean_per_class_recall", metric_value(m.mean_per_class_recall)}};
}

// ---- zeroshot ----
struct ZeroShotOptions {
  Common c;
  std::string dataset, classnames, templates;
  bool per_class = false, confusion = false;
};

PromptSet prompts_for(const ZeroShotOptions& o, const Dataset& d) {
  PromptSet p;
  const std::string key = o.c.dataset_name.empty() ? d.name : o.c.dataset_name;
  if (!o.classnames.empty()) {
    p.classnames = load_prompt_list(o.classnames, "classes", key);
  } else {
    if (d.classnames.empty()) throw Error(d.source + ": no class names; pass --classnames");
    for (auto name : d.classnames) {
      std::replace(name.begin(), name.end(), '_', ' ');
      p.classnames.push_back(name);
    }
  }
  if (!o.templates.empty()) {
    p.templates = load_prompt_list(o.templates, "templates", key);
  } else {
    // A JSON class-name file may carry the templates too (imagenet_classes_templates.json,
    // clip_prompts_all.json); otherwise the single prompt the paper starts from.
    try {
      if (!o.classnames.empty()) p.templates = load_prompt_list(o.classnames, "templates", key);
    } catch (const Error&) {
    }
    if (p.templates.empty() || (p.templates == p.classnames)) p.templates = {"a photo of a {}."};
  }
  for (auto& t : p.templates) format_template(t, "x");  // every template must take the class name
  if (int(p.classnames.size()) < d.num_classes())
    throw Error(d.source + ": labels go up to " + std::to_string(d.num_classes() - 1) + " but there are only " +
                std::to_string(p.classnames.size()) + " class names");
  return p;
}

ClassificationMetrics zeroshot_eval(ModelContext& m, const Common& c, const Dataset& d, const ClassEmbeddings& ce,
                                    bool confusion) {
  auto y = labels_of(d);
  auto feats = dataset_features(m, c, d);
  auto logits = zeroshot_logits(feats.data(), int64_t(d.size()), m.dim, ce);
  return classification_metrics(logits.data(), int64_t(d.size()), ce.num_classes, y.data(), confusion);
}

void run_zeroshot(const ZeroShotOptions& o) {
  begin(o.c);
  ModelContext m = load_model(o.c, true);
  Dataset d = open(o.c, o.dataset);
  PromptSet p = prompts_for(o, d);
  std::fprintf(g_text, "zero-shot: %zu classes x %zu templates, %zu images\n", p.classnames.size(), p.templates.size(), d.size());
  auto ce = build_class_embeddings(p.classnames, p.templates, text_encoder(m, o.c.batch_size, o.c.truncate), o.c.batch_size);
  auto cm = zeroshot_eval(m, o.c, d, ce, o.confusion);
  EvalResult r;
  r.dataset = o.c.dataset_name.empty() ? d.name : o.c.dataset_name;
  r.model = m.name;
  r.pretrained = o.c.pretrained;
  r.task = "zeroshot_classification";
  r.metrics = classification_json(cm);
  r.details["templates"] = p.templates.size();
  r.details["samples"] = d.size();
  if (o.per_class || o.confusion) {
    nlohmann::json pc = nlohmann::json::object();
    for (size_t k = 0; k < p.classnames.size(); ++k) pc[p.classnames[k]] = metric_value(cm.per_class_recall[k]);
    r.details["per_class_recall"] = pc;
  }
  if (o.confusion) {
    nlohmann::json rows = nlohmann::json::array();
    for (int t = 0; t < cm.num_classes; ++t)
      rows.push_back(std::vector<int64_t>(cm.confusion.begin() + long(t) * cm.num_classes,
                                          cm.confusion.begin() + long(t + 1) * cm.num_classes));
    r.details["classnames"] = p.classnames;
    r.details["confusion_matrix"] = rows;  // [true][predicted]
  }
  std::fprintf(g_text, "%s", summarize(r).c_str());
  if (o.per_class) {
    std::vector<std::vector<std::string>> rows;
    for (size_t k = 0; k < p.classnames.size(); ++k)
      rows.push_back({p.classnames[k], std::to_string(cm.per_class_count[k]), format_number(metric_value(cm.per_class_recall[k]))});
    std::fprintf(g_text, "\n%s", format_table({"class", "samples", "recall"}, rows).c_str());
  }
  save(o.c, r);
}

// ---- linear probe ----
struct ProbeOptions {
  Common c;
  std::string train, test;                                // datasets (with --model)
  std::string train_features, train_labels, test_features, test_labels;  // or precomputed features
  double C = 0;                                           // > 0: fixed, no search
  double val_fraction = 0.2;
  int max_iter = 1000;
  std::vector<int> shots;
  int seeds = 3;
  uint64_t seed = 0;
  bool verbose = false;
  bool normalize = false;
};

std::vector<int> read_labels(const std::string& path) {
  std::vector<int> y;
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".npy") == 0) {
    std::vector<int64_t> shape;
    auto v = read_npy_f32(path, shape);
    for (float f : v) {
      if (f < 0 || f != std::floor(f)) throw Error(path + ": label " + std::to_string(f) + " is not a class index");
      y.push_back(int(f));
    }
    return y;
  }
  std::istringstream in(read_text_file(path));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(line, &used);
    } catch (...) {
      used = 0;
    }
    if (used != line.size() || v < 0) throw Error(path + ":" + std::to_string(n) + ": \"" + line + "\" is not a class index");
    y.push_back(v);
  }
  return y;
}

std::vector<float> read_features(const std::string& path, size_t rows, int& dim) {
  std::vector<int64_t> shape;
  auto x = read_npy_f32(path, shape);
  if (shape.size() != 2) throw Error(path + ": features must be a 2-D array [samples, dim]");
  if (size_t(shape[0]) != rows)
    throw Error(path + ": " + std::to_string(shape[0]) + " feature rows but " + std::to_string(rows) + " labels");
  if (dim && shape[1] != dim) throw Error(path + ": feature dimension " + std::to_string(shape[1]) + " differs from the training features' " + std::to_string(dim));
  dim = int(shape[1]);
  return x;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_probe(const ProbeOptions& o) {
  begin(o.c);
  std::vector<float> Xtr, Xte;
  std::vector<int> ytr, yte;
  int dim = 0;
  EvalResult base;
  base.task = "linear_probe";
  base.pretrained = o.c.pretrained;
  if (!o.train_features.empty()) {
    if (o.train_labels.empty() || o.test_features.empty() || o.test_labels.empty())
      throw Error("--train-features needs --train-labels, --test-features and --test-labels");
    ytr = read_labels(o.train_labels);
    yte = read_labels(o.test_labels);
    Xtr = read_features(o.train_features, ytr.size(), dim);
    Xte = read_features(o.test_features, yte.size(), dim);
    base.model = o.c.model_name.empty() ? "features" : o.c.model_name;
    base.dataset = o.c.dataset_name.empty() ? fs::path(o.test_features).stem().string() : o.c.dataset_name;
  } else {
    if (o.c.model.empty() || o.train.empty() || o.test.empty())
      throw Error("linear-probe needs --model with --train and --test datasets, or --train-features/--test-features");
    ModelContext m = load_model(o.c, false);
    Dataset dtr = open(o.c, o.train), dte = open(o.c, o.test);
    ytr = labels_of(dtr);
    yte = labels_of(dte);
    Xtr = dataset_features(m, o.c, dtr);
    Xte = dataset_features(m, o.c, dte);
    dim = m.dim;
    // The paper's and the CLIP README's probe use the raw encoder output; CLIP_benchmark's
    // normalizes (--normalize-features).
    if (o.normalize) {
      l2_normalize_rows(Xtr.data(), int64_t(ytr.size()), dim);
      l2_normalize_rows(Xte.data(), int64_t(yte.size()), dim);
    }
    base.model = m.name;
    base.dataset = o.c.dataset_name.empty() ? dte.name : o.c.dataset_name;
  }
  int K = 0;
  for (int v : ytr) K = std::max(K, v + 1);
  for (int v : yte) K = std::max(K, v + 1);
  LogisticRegressionOptions lo;
  lo.max_iter = o.max_iter;
  lo.verbose = o.verbose;
  const int64_t ntr = int64_t(ytr.size()), nte = int64_t(yte.size());
  std::vector<float> scores(size_t(nte) * K);

  // The penalty: given, or searched on a validation split of the full training set.
  nlohmann::json search_json;
  double C = o.C;
  auto t0 = std::chrono::steady_clock::now();
  if (!(C > 0)) {
    std::fprintf(g_text, "searching C on a %.0f%% validation split of %lld training samples...\n", 100 * o.val_fraction,
                static_cast<long long>(ntr));
    auto s = search_penalty(Xtr.data(), ytr.data(), ntr, dim, K, lo, o.val_fraction, o.seed);
    C = s.best_C;
    search_json = {{"Cs", s.Cs}, {"validation_acc1", s.validation_accuracies}, {"train", s.train_count},
                   {"validation", s.validation_count}, {"seconds", seconds_since(t0)}};
    std::fprintf(g_text, "chosen C = %.4g (validation accuracy %.4f, %zu fits)\n", C, s.best_validation_accuracy, s.Cs.size());
  }
  lo.C = C;
  if (o.shots.empty()) {
    t0 = std::chrono::steady_clock::now();
    auto model = fit_logistic_regression(Xtr.data(), ytr.data(), ntr, dim, K, lo);
    const double secs = seconds_since(t0);
    decision_function(model, Xte.data(), nte, scores.data());
    auto cm = classification_metrics(scores.data(), nte, K, yte.data());
    EvalResult r = base;
    r.metrics = classification_json(cm);
    r.metrics["C"] = C;
    r.metrics["fewshot_k"] = -1;
    r.details = {{"iterations", model.iterations}, {"stop", model.stop_reason}, {"fit_seconds", secs},
                 {"train", ntr}, {"test", nte}, {"dim", dim}, {"objective", model.objective}};
    if (!search_json.is_null()) r.details["penalty_search"] = search_json;
    std::fprintf(g_text, "%s", summarize(r).c_str());
    save(o.c, r);
    return;
  }
  // Few-shot: k per class, several seeds, mean and standard deviation.
  std::vector<std::vector<std::string>> rows;
  for (int k : o.shots) {
    std::vector<double> accs, acc5s, recalls;
    for (int s = 0; s < o.seeds; ++s) {
      auto idx = sample_few_shot(ytr.data(), ntr, K, k, o.seed + uint64_t(s));
      std::vector<float> Xk;
      std::vector<int> yk;
      gather_rows(Xtr.data(), ytr.data(), dim, idx, Xk, yk);
      auto model = fit_logistic_regression(Xk.data(), yk.data(), int64_t(yk.size()), dim, K, lo);
      decision_function(model, Xte.data(), nte, scores.data());
      auto cm = classification_metrics(scores.data(), nte, K, yte.data());
      accs.push_back(cm.top1);
      acc5s.push_back(cm.top5);
      recalls.push_back(cm.mean_per_class_recall);
    }
    auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return s / double(v.size());
    };
    auto stdev = [&](const std::vector<double>& v) {
      const double m = mean(v);
      double s = 0;
      for (double x : v) s += (x - m) * (x - m);
      return v.size() > 1 ? std::sqrt(s / double(v.size() - 1)) : 0.0;
    };
    EvalResult r = base;
    r.metrics = {{"acc1", mean(accs)}, {"acc1_std", stdev(accs)}, {"acc5", metric_value(mean(acc5s))},
                 {"mean_per_class_recall", mean(recalls)}, {"C", C}, {"fewshot_k", k}, {"seeds", o.seeds}};
    r.details = {{"acc1_per_seed", accs}, {"first_seed", o.seed}};
    if (!search_json.is_null()) r.details["penalty_search"] = search_json;
    save(o.c, r, "_" + std::to_string(k) + "shot");
    rows.push_back({std::to_string(k), format_number(mean(accs)), format_number(stdev(accs))});
  }
  // Zero-shot of the same model and dataset, if it was evaluated into the same folder.
  EvalResult z = base;
  z.task = "zeroshot_classification";
  const std::string zpath = result_path(o.c, z);
  std::string zs;
  if (fs::exists(zpath)) zs = format_number(read_result(zpath).metrics.value("acc1", nlohmann::json()));
  std::fprintf(g_text, "\nfew-shot linear probe (C = %.4g, %d seeds)%s\n%s", C, o.seeds,
              zs.empty() ? "" : (" vs zero-shot top-1 " + zs).c_str(),
              format_table({"shots", "acc1", "std"}, rows).c_str());
}

// ---- retrieval ----
struct RetrievalOptions {
  Common c;
  std::string dataset;
  std::string image_features, text_features, text_image;
  std::vector<int> ks{1, 5, 10};
};

void run_retrieval(const RetrievalOptions& o) {
  begin(o.c);
  std::vector<float> img, txt;
  std::vector<int64_t> text_image;
  int dim = 0;
  int64_t ni = 0, nt = 0;
  EvalResult r;
  r.task = "zeroshot_retrieval";
  r.pretrained = o.c.pretrained;
  if (!o.image_features.empty()) {
    if (o.text_features.empty() || o.text_image.empty())
      throw Error("--image-features needs --text-features and --text-image");
    std::vector<int64_t> si, st, sx;
    img = read_npy_f32(o.image_features, si);
    txt = read_npy_f32(o.text_features, st);
    auto ti = read_npy_f32(o.text_image, sx);
    if (si.size() != 2 || st.size() != 2 || si[1] != st[1])
      throw Error(o.image_features + ", " + o.text_features + ": need 2-D features of the same dimension");
    ni = si[0];
    nt = st[0];
    dim = int(si[1]);
    for (float f : ti) text_image.push_back(int64_t(f));
    r.model = o.c.model_name.empty() ? "features" : o.c.model_name;
    r.dataset = o.c.dataset_name.empty() ? fs::path(o.image_features).stem().string() : o.c.dataset_name;
  } else {
    if (o.c.model.empty() || o.dataset.empty()) throw Error("retrieval needs --model and --dataset (or --image-features)");
    ModelContext m = load_model(o.c, true);
    Dataset d = open(o.c, o.dataset);
    if (!d.has_captions()) throw Error(d.source + ": retrieval needs captions for every image (a caption column or .txt members)");
    std::vector<std::string> captions;
    for (size_t i = 0; i < d.size(); ++i)
      for (auto& cap : d.samples[i].captions) {
        captions.push_back(cap);
        text_image.push_back(int64_t(i));
      }
    std::fprintf(g_text, "retrieval: %zu images, %zu captions\n", d.size(), captions.size());
    img = dataset_features(m, o.c, d);
    text_encoder(m, o.c.batch_size, o.c.truncate)(captions, txt);
    ni = int64_t(d.size());
    nt = int64_t(captions.size());
    dim = m.dim;
    r.model = m.name;
    r.dataset = o.c.dataset_name.empty() ? d.name : o.c.dataset_name;
  }
  auto rm = retrieval_metrics(img.data(), ni, txt.data(), nt, dim, text_image, o.ks);
  for (int k : o.ks) {
    r.metrics["image_retrieval_recall@" + std::to_string(k)] = rm.text_to_image.recall.at(k);
    r.metrics["text_retrieval_recall@" + std::to_string(k)] = rm.image_to_text.recall.at(k);
  }
  r.metrics["image_retrieval_mean_rank"] = rm.text_to_image.mean_rank;
  r.metrics["image_retrieval_median_rank"] = rm.text_to_image.median_rank;
  r.metrics["text_retrieval_mean_rank"] = rm.image_to_text.mean_rank;
  r.metrics["text_retrieval_median_rank"] = rm.image_to_text.median_rank;
  r.details = {{"images", ni}, {"captions", nt}};
  std::vector<std::vector<std::string>> rows;
  for (int k : o.ks)
    rows.push_back({"R@" + std::to_string(k), format_number(rm.image_to_text.recall.at(k)),
                    format_number(rm.text_to_image.recall.at(k))});
  rows.push_back({"mean rank", format_number(rm.image_to_text.mean_rank, 2), format_number(rm.text_to_image.mean_rank, 2)});
  rows.push_back({"median rank", format_number(rm.image_to_text.median_rank, 1), format_number(rm.text_to_image.median_rank, 1)});
  std::fprintf(g_text, "%s", format_table({"", "image->text", "text->image"}, rows).c_str());
  save(o.c, r);
}

// ---- robustness ----
struct RobustnessOptions {
  ZeroShotOptions z;
  std::vector<std::string> variants;  // "name=spec" or a spec (named by its path)
};

void run_robustness(const RobustnessOptions& o) {
  begin(o.z.c);
  const Common& c = o.z.c;
  if (o.variants.empty()) throw Error("robustness needs at least one --variant");
  ModelContext m = load_model(c, true);
  Dataset base = open(c, o.z.dataset);
  PromptSet p = prompts_for(o.z, base);
  auto ce = build_class_embeddings(p.classnames, p.templates, text_encoder(m, c.batch_size, c.truncate), c.batch_size);
  const auto b = zeroshot_eval(m, c, base, ce, false);
  EvalResult r;
  r.task = "robustness";
  r.model = m.name;
  r.pretrained = c.pretrained;
  r.dataset = c.dataset_name.empty() ? base.name : c.dataset_name;
  nlohmann::json variants = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({r.dataset + " (base)", std::to_string(base.size()), format_number(b.top1), ""});
  double sum = 0;
  for (auto& v : o.variants) {
    std::string name = v, spec = v;
    const auto eq = v.find('=');
    if (eq != std::string::npos) {
      name = v.substr(0, eq);
      spec = v.substr(eq + 1);
    } else {
      // "out/gaussian_noise/3" -> "gaussian_noise/3": the last two path parts name a variant.
      fs::path pth = fs::path(spec).lexically_normal();
      if (pth.filename().empty()) pth = pth.parent_path();
      name = (pth.parent_path().filename() / pth.filename()).string();
    }
    Dataset d = open(c, spec);
    if (d.num_classes() > ce.num_classes)
      throw Error(spec + ": has labels beyond the base set's " + std::to_string(ce.num_classes) + " classes");
    const auto vm = zeroshot_eval(m, c, d, ce, false);
    variants.push_back({{"name", name}, {"source", spec}, {"samples", d.size()}, {"acc1", vm.top1},
                        {"acc5", metric_value(vm.top5)}, {"mean_per_class_recall", vm.mean_per_class_recall},
                        {"delta", vm.top1 - b.top1}});
    sum += vm.top1;
    rows.push_back({name, std::to_string(d.size()), format_number(vm.top1), format_number(vm.top1 - b.top1)});
  }
  const double mean_shifted = sum / double(o.variants.size());
  r.metrics = {{"base_acc1", b.top1}, {"mean_shifted_acc1", mean_shifted}, {"mean_delta", mean_shifted - b.top1}};
  r.details = {{"base", r.dataset}, {"variants", variants}, {"templates", p.templates.size()}};
  std::fprintf(g_text, "%s", format_table({"set", "samples", "acc1", "change"}, rows).c_str());
  save(c, r);
}

// ---- report ----
struct ReportOptions {
  std::vector<std::string> inputs;
  std::string output = "report";
};

void run_report(const ReportOptions& o) {
  auto results = read_results(o.inputs);
  if (results.empty()) throw Error("no evaluation results found in the given files or folders");
  auto rep = build_report(results);
  std::error_code ec;
  fs::create_directories(o.output, ec);
  if (ec) throw Error(o.output + ": cannot create folder: " + ec.message());
  write_file_atomic((fs::path(o.output) / "report.md").string(), rep.markdown);
  write_file_atomic((fs::path(o.output) / "report.csv").string(), rep.csv);
  if (!rep.fewshot_svg.empty()) write_file_atomic((fs::path(o.output) / "fewshot.svg").string(), rep.fewshot_svg);
  if (!rep.robustness_svg.empty())
    write_file_atomic((fs::path(o.output) / "robustness.svg").string(), rep.robustness_svg);
  std::fprintf(g_text, "%s", rep.markdown.c_str());
  std::fprintf(g_text, "wrote %s/report.md, report.csv%s%s (%zu results)\n", o.output.c_str(),
              rep.fewshot_svg.empty() ? "" : ", fewshot.svg", rep.robustness_svg.empty() ? "" : ", robustness.svg",
              results.size());
}

void add_prompt_options(CLI::App* cmd, ZeroShotOptions& z) {
  cmd->add_option("-d,--dataset", z.dataset, "Labeled dataset: class folders, CSV, IDX or .tar shards")->required();
  cmd->add_option("--classnames,--labels-file", z.classnames, "Class names: text (one per line) or JSON (CLIP_benchmark's, "
                                                "clip_prompts_all.json, ...); default: the dataset's class names");
  cmd->add_option("--templates,--templates-file", z.templates, "Prompt templates with {} or {c}: text or JSON; default \"a photo of a {}.\"");
}

const CommandRegistrar eval_command("eval", 60, [](CLI::App& root) {
  CLI::App* eval = root.add_subcommand("eval", "Evaluate a model: zero-shot, linear probe, retrieval, robustness, report");
  eval->require_subcommand(1);

  auto zs = std::make_shared<ZeroShotOptions>();
  CLI::App* z = eval->add_subcommand("zeroshot", "Zero-shot classification (class names through prompt templates)");
  add_model_options(z, zs->c, true);
  add_prompt_options(z, *zs);
  z->add_flag("--per-class", zs->per_class, "Print and store per-class recall");
  z->add_flag("--confusion", zs->confusion, "Store the confusion matrix in the result");
  z->footer(
      "Examples:\n"
      "  clip eval zeroshot -m models/cifar10-vit-tiny -d ../shared/data/cifar10_jpeg/test --dataset-name cifar10\n"
      "  clip eval zeroshot -m model.safetensors -d test.csv --templates-file templates.txt --limit 1000 --json\n"
      "Templates: {} and {c} stand for the class name. Results are printed; -o DIR also writes them as JSON.");
  z->callback([zs] { run_zeroshot(*zs); });

  auto lp = std::make_shared<ProbeOptions>();
  CLI::App* l = eval->add_subcommand("linear-probe", "Logistic-regression probe on frozen image features (L-BFGS)");
  add_model_options(l, lp->c, false);
  l->add_option("--train", lp->train, "Training dataset (with --model)");
  l->add_option("--test", lp->test, "Test dataset (with --model)");
  l->add_option("--train-features", lp->train_features, "Precomputed training features (.npy [n, dim] float32)");
  l->add_option("--train-labels", lp->train_labels, "Training labels (.npy or text, one per line)");
  l->add_option("--test-features", lp->test_features, "Precomputed test features (.npy)");
  l->add_option("--test-labels", lp->test_labels, "Test labels (.npy or text)");
  l->add_option("--C", lp->C, "Inverse L2 penalty (scikit-learn's C); default: searched on a validation split");
  l->add_option("--val-fraction", lp->val_fraction, "Validation share of the training set for the C search")
      ->check(CLI::Range(0.01, 0.9));
  l->add_option("--max-iter", lp->max_iter, "L-BFGS iterations at most")->check(CLI::PositiveNumber);
  l->add_option("--shots", lp->shots, "Few-shot: examples per class (e.g. --shots 1 2 4 8 16)")->delimiter(',');
  l->add_option("--seeds", lp->seeds, "Few-shot: samplings averaged per shot count")->check(CLI::PositiveNumber);
  l->add_option("--seed", lp->seed, "Seed of the validation split and the few-shot samples");
  l->add_flag("--normalize-features", lp->normalize, "L2-normalize image features first (as CLIP_benchmark)");
  l->add_flag("-v,--verbose", lp->verbose, "Print L-BFGS and search progress");
  l->footer(
      "Examples:\n"
      "  clip eval linear-probe -m models/cifar10-vit-tiny --train cifar10/train --test cifar10/test\n"
      "  clip eval linear-probe -m model.safetensors --train train/ --test test/ --shots 1,2,4,8,16 --seeds 5\n"
      "  clip eval linear-probe --train-features x.npy --train-labels y.txt --test-features tx.npy --test-labels ty.txt");
  l->callback([lp] { run_probe(*lp); });

  auto rt = std::make_shared<RetrievalOptions>();
  CLI::App* t = eval->add_subcommand("retrieval", "Image<->text retrieval: recall@k, mean and median rank");
  add_model_options(t, rt->c, false);
  t->add_option("-d,--dataset", rt->dataset, "Captioned dataset: CSV (image,caption) or .tar shards with .txt");
  t->add_option("--image-features", rt->image_features, "Precomputed image features (.npy)");
  t->add_option("--text-features", rt->text_features, "Precomputed caption features (.npy)");
  t->add_option("--text-image", rt->text_image, "Image index of each caption (.npy)");
  t->add_option("--recall-k", rt->ks, "Recall cut-offs, e.g. 1,5,10")->delimiter(',')->capture_default_str();
  t->footer(
      "Examples:\n"
      "  clip eval retrieval -m models/cifar10-vit-tiny -d flickr8k/captions.txt --root flickr8k/images\n"
      "  clip eval retrieval --image-features i.npy --text-features t.npy --text-image ti.npy --recall-k 1,5,10");
  t->callback([rt] { run_retrieval(*rt); });

  auto rb = std::make_shared<RobustnessOptions>();
  CLI::App* b = eval->add_subcommand("robustness", "Zero-shot accuracy on a base set and shifted variants");
  add_model_options(b, rb->z.c, true);
  add_prompt_options(b, rb->z);
  b->add_option("--variant", rb->variants, "A shifted set (folder, CSV, ...), optionally NAME=SPEC; repeatable")
      ->required();
  b->footer(
      "Examples:\n"
      "  clip data corrupt -i cifar10/test -o corrupted -c gaussian_noise,contrast -s 3\n"
      "  clip eval robustness -m models/cifar10-vit-tiny -d cifar10/test --variant corrupted/gaussian_noise/3 \\\n"
      "      --variant low_contrast=corrupted/contrast/3");
  b->callback([rb] { run_robustness(*rb); });

  auto rp = std::make_shared<ReportOptions>();
  CLI::App* r = eval->add_subcommand("report", "Merge results into Markdown/CSV tables and SVG plots");
  r->add_option("inputs", rp->inputs, "Result files or folders")->required();
  r->add_option("-o,--output", rp->output, "Report folder");
  r->footer("Examples:\n  clip eval report results/ -o report/");
  r->callback([rp] { run_report(*rp); });
});

}  // namespace
}  // namespace clip::app
