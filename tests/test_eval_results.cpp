// Result files in CLIP_benchmark's layout (written atomically, read back), null for missing
// metrics, and the merged report: Markdown and CSV tables, few-shot and robustness SVGs.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>

#include "data/datasets.h"
#include "core/error.h"
#include "core/io.h"
#include "eval/results.h"

using namespace clip::eval;
using namespace clip::data;
namespace fs = std::filesystem;

TEST(EvalResults, WriteReadLayout) {
  const std::string dir = std::string(CLIP_BINARY_DIR) + "/eval_tmp/results";
  fs::remove_all(dir);
  EvalResult r;
  r.dataset = "cifar10";
  r.model = "ViT-B/32";
  r.pretrained = "openai";
  r.task = "zeroshot_classification";
  r.metrics["acc1"] = 0.8983;
  r.metrics["acc5"] = metric_value(std::numeric_limits<double>::quiet_NaN());
  r.metrics["mean_per_class_recall"] = 0.9;
  const std::string path = default_result_path(dir, r);
  EXPECT_EQ(fs::path(path).filename(), "ViT-B_32_openai_cifar10_zeroshot_classification.json");
  write_result(path, r);
  const std::string text = clip::read_text_file(path);
  EXPECT_LT(text.find("\"dataset\""), text.find("\"model\""));  // CLIP_benchmark's key order
  EXPECT_LT(text.find("\"metrics\""), text.find("\"language\""));
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["language"], "en");
  EXPECT_TRUE(j["metrics"]["acc5"].is_null());
  auto back = read_result(path);
  EXPECT_EQ(back.model, "ViT-B/32");
  EXPECT_DOUBLE_EQ(back.metrics["acc1"].get<double>(), 0.8983);
  clip::write_file_atomic(dir + "/other.json", std::string("{\"x\": 1}"));
  EXPECT_THROW(read_result(dir + "/other.json"), clip::Error);
  EXPECT_EQ(read_results({dir}).size(), 1u);  // the foreign JSON is skipped
}

TEST(EvalResults, ReportTablesAndPlots) {
  std::vector<EvalResult> rs;
  EvalResult z;
  z.model = "m";
  z.dataset = "d";
  z.task = "zeroshot_classification";
  z.metrics = {{"acc1", 0.5}, {"acc5", 0.9}};
  rs.push_back(z);
  for (int k : {1, 2, 4, 8}) {
    EvalResult f = z;
    f.task = "linear_probe";
    f.metrics = {{"acc1", 0.3 + 0.05 * k}, {"acc1_std", 0.01}, {"fewshot_k", k}, {"C", 0.316}};
    rs.push_back(f);
  }
  EvalResult rob = z;
  rob.task = "robustness";
  rob.metrics = {{"base_acc1", 0.5}, {"mean_shifted_acc1", 0.35}};
  rob.details = {{"base", "clean"},
                 {"variants", {{{"name", "noise-3"}, {"acc1", 0.3}, {"delta", -0.2}},
                               {{"name", "blur-3"}, {"acc1", 0.4}, {"delta", -0.1}}}}};
  rs.push_back(rob);
  auto rep = build_report(rs);
  EXPECT_NE(rep.markdown.find("## zeroshot_classification"), std::string::npos);
  EXPECT_NE(rep.markdown.find("| m |  | d | 0.5000 | 0.9000 |"), std::string::npos) << rep.markdown;
  EXPECT_NE(rep.markdown.find("| noise-3 | 0.3000 | -0.2000 |"), std::string::npos) << rep.markdown;
  EXPECT_NE(rep.csv.find("m,,d,linear_probe,fewshot_k,8\n"), std::string::npos) << rep.csv;
  EXPECT_NE(rep.fewshot_svg.find("<svg"), std::string::npos);
  EXPECT_NE(rep.fewshot_svg.find("stroke-dasharray"), std::string::npos);  // the zero-shot line
  EXPECT_NE(rep.robustness_svg.find("noise-3"), std::string::npos);
  // The SVGs are well-formed enough for an XML parser: balanced svg tags, escaped names.
  EvalResult odd = z;
  odd.model = "a<b&c";
  odd.task = "linear_probe";
  odd.metrics = {{"acc1", 0.4}, {"fewshot_k", 2}};
  rs.push_back(odd);
  auto rep2 = build_report(rs);
  EXPECT_EQ(rep2.fewshot_svg.find("a<b&c"), std::string::npos);
  EXPECT_NE(rep2.fewshot_svg.find("a&lt;b&amp;c"), std::string::npos);
}

TEST(EvalResults, TerminalTable) {
  auto t = format_table({"name", "acc"}, {{"x", "0.5"}, {"longer", "12.25"}});
  EXPECT_EQ(t, "name      acc\n------  -----\nx         0.5\nlonger  12.25\n");
}
