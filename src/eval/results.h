#pragma once
// Results in CLIP_benchmark's layout, one JSON per (model, dataset, task):
//   {"dataset": ..., "model": ..., "pretrained": ..., "task": ..., "metrics": {...}, "language": "en"}
// Tasks and metric names follow CLIP_benchmark: "zeroshot_classification" and "linear_probe"
// (acc1, acc5, mean_per_class_recall), "zeroshot_retrieval" (image_retrieval_recall@k =
// text->image, text_retrieval_recall@k = image->text). Extra keys we add: mean/median ranks,
// the probe's C, few-shot k and seeds (with *_std), and "robustness" (per-variant accuracy).
// A metric that does not exist (top-5 with < 5 classes) is written as null (JSON has no NaN).
// Anything else (per-class recall, confusion matrix, penalty search) goes under "details".
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace clip::eval {

struct EvalResult {
  std::string dataset, model, pretrained, task, language = "en";
  nlohmann::json metrics = nlohmann::json::object();
  nlohmann::json details = nlohmann::json::object();  // written only when non-empty
};

nlohmann::json to_json(const EvalResult& r);
EvalResult result_from_json(const nlohmann::json& j, const std::string& source);
// A number, or null when NaN/inf.
nlohmann::json metric_value(double v);

void write_result(const std::string& path, const EvalResult& r);  // atomic, pretty-printed
EvalResult read_result(const std::string& path);
// Reads every *.json result under `paths` (files or folders, recursively); skips JSON files
// that are not results only when `skip_foreign` (else throws naming the file).
std::vector<EvalResult> read_results(const std::vector<std::string>& paths, bool skip_foreign = true);

// "<dir>/<model>_<dataset>_<task>.json" with characters outside [A-Za-z0-9._-] replaced by '_'.
std::string default_result_path(const std::string& dir, const EvalResult& r);

// A terminal table: header row, rows, right-aligned numeric columns.
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
std::string format_number(const nlohmann::json& v, int decimals = 4);

// Human-readable summary of one result (the metrics as a two-column table).
std::string summarize(const EvalResult& r);

struct ReportFiles {
  std::string markdown, csv, fewshot_svg, robustness_svg;  // contents ("" when nothing to plot)
};
// Merges results: one Markdown table per task (rows model/pretrained/dataset, columns the
// task's scalar metrics), a long-format CSV (model,pretrained,dataset,task,metric,value),
// an SVG few-shot curve (linear_probe results by fewshot_k, with +-std bars and the
// zero-shot accuracy of the same model and dataset as a dashed line) and SVG robustness bars.
ReportFiles build_report(const std::vector<EvalResult>& results);

}  // namespace clip::eval
