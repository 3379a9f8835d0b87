#include "eval/results.h"

#include <algorithm>
#include <array>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/io.h"

namespace clip::eval {

namespace fs = std::filesystem;

nlohmann::json metric_value(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}

nlohmann::json to_json(const EvalResult& r) {
  nlohmann::json j;
  j["dataset"] = r.dataset;
  j["model"] = r.model;
  j["pretrained"] = r.pretrained;
  j["task"] = r.task;
  j["metrics"] = r.metrics;
  j["language"] = r.language;
  if (!r.details.empty()) j["details"] = r.details;
  return j;
}

EvalResult result_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object() || !j.contains("task") || !j.contains("metrics") || !j["metrics"].is_object())
    throw Error(source + ": not an evaluation result (needs \"task\" and an object \"metrics\")");
  EvalResult r;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  r.dataset = str("dataset");
  r.model = str("model");
  r.pretrained = str("pretrained");
  r.task = str("task");
  r.language = str("language");
  r.metrics = j["metrics"];
  if (j.contains("details")) r.details = j["details"];
  return r;
}

static std::string dump_ordered(const EvalResult& r) {
  // Keys in CLIP_benchmark's order, then ours.
  nlohmann::ordered_json o;
  o["dataset"] = r.dataset;
  o["model"] = r.model;
  o["pretrained"] = r.pretrained;
  o["task"] = r.task;
  o["metrics"] = nlohmann::ordered_json::parse(r.metrics.dump());
  o["language"] = r.language;
  if (!r.details.empty()) o["details"] = nlohmann::ordered_json::parse(r.details.dump());
  return o.dump(2) + "\n";
}

void write_result(const std::string& path, const EvalResult& r) {
  const fs::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error(path + ": cannot create folder: " + ec.message());
  }
  write_file_atomic(path, dump_ordered(r));
}

EvalResult read_result(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  return result_from_json(j, path);
}

std::vector<EvalResult> read_results(const std::vector<std::string>& paths, bool skip_foreign) {
  std::vector<std::string> files;
  for (auto& p : paths) {
    if (fs::is_directory(p)) {
      for (auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path().string());
    } else if (fs::exists(p)) {
      files.push_back(p);
    } else {
      throw Error(p + ": no such file or folder");
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<EvalResult> out;
  for (auto& f : files) {
    try {
      out.push_back(read_result(f));
    } catch (const Error&) {
      if (!skip_foreign) throw;
    }
  }
  return out;
}

static std::string sanitize(const std::string& s) {
  std::string o;
  for (char c : s) o += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  return o.empty() ? "_" : o;
}

std::string default_result_path(const std::string& dir, const EvalResult& r) {
  std::string name = sanitize(r.model);
  if (!r.pretrained.empty()) name += "_" + sanitize(r.pretrained);
  name += "_" + sanitize(r.dataset) + "_" + sanitize(r.task) + ".json";
  return (fs::path(dir.empty() ? "." : dir) / name).string();
}

std::string format_number(const nlohmann::json& v, int decimals) {
  if (v.is_null()) return "-";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v.get<double>());
    return buf;
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  std::vector<bool> numeric(header.size(), true);
  for (size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (auto& r : rows)
    for (size_t c = 0; c < r.size() && c < w.size(); ++c) {
      w[c] = std::max(w[c], r[c].size());
      if (!r[c].empty() && r[c] != "-" && r[c].find_first_not_of("0123456789.+-e%") != std::string::npos)
        numeric[c] = false;
    }
  std::ostringstream o;
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < w.size(); ++c) {
      const std::string cell = c < r.size() ? r[c] : "";
      const std::string pad(w[c] - cell.size(), ' ');
      o << (c ? "  " : "") << (numeric[c] ? pad + cell : cell + (c + 1 < w.size() ? pad : ""));
    }
    o << "\n";
  };
  line(header);
  std::vector<std::string> rule;
  for (auto x : w) rule.push_back(std::string(x, '-'));
  line(rule);
  for (auto& r : rows) line(r);
  return o.str();
}

std::string summarize(const EvalResult& r) {
  std::ostringstream o;
  o << r.task << ": " << r.model << (r.pretrained.empty() ? "" : " (" + r.pretrained + ")") << " on " << r.dataset
    << "\n";
  std::vector<std::vector<std::string>> rows;
  for (auto it = r.metrics.begin(); it != r.metrics.end(); ++it)
    if (!it->is_object() && !it->is_array()) rows.push_back({it.key(), format_number(*it)});
  o << format_table({"metric", "value"}, rows);
  return o.str();
}

namespace {

std::string md_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '|' ? std::string("\\|") : std::string(1, c);
  return o;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

double num(const nlohmann::json& m, const char* key, double fallback = NAN) {
  if (!m.contains(key) || !m[key].is_number()) return fallback;
  return m[key].get<double>();
}

std::string fmt(double v, int d = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", d, v);
  return b;
}

// Few-shot curves: x = log2(k), y = top-1 accuracy.
std::string fewshot_svg(const std::vector<EvalResult>& results) {
  struct Series { std::string label; std::vector<std::array<double, 3>> pts; double zeroshot = NAN, full = NAN; };
  std::map<std::string, Series> series;
  for (auto& r : results) {
    const std::string key = r.model + (r.pretrained.empty() ? "" : "/" + r.pretrained) + " | " + r.dataset;
    if (r.task == "linear_probe") {
      const double k = num(r.metrics, "fewshot_k", -1), acc = num(r.metrics, "acc1");
      if (!std::isfinite(acc)) continue;
      auto& s = series[key];
      s.label = key;
      if (k > 0) s.pts.push_back({k, acc, num(r.metrics, "acc1_std", 0)});
      else s.full = acc;
    }
  }
  for (auto& r : results)
    if (r.task == "zeroshot_classification") {
      const std::string key = r.model + (r.pretrained.empty() ? "" : "/" + r.pretrained) + " | " + r.dataset;
      auto it = series.find(key);
      if (it != series.end()) it->second.zeroshot = num(r.metrics, "acc1");
    }
  double kmin = 1e300, kmax = 0;
  for (auto& [_, s] : series) {
    std::sort(s.pts.begin(), s.pts.end());
    for (auto& p : s.pts) { kmin = std::min(kmin, p[0]); kmax = std::max(kmax, p[0]); }
  }
  if (kmax <= 0) return "";
  if (kmax == kmin) kmax = kmin * 2;
  const double W = 720, H = 440, L = 70, R = 250, T = 40, B = 60;
  const double x0 = std::log2(kmin), x1 = std::log2(kmax);
  auto X = [&](double k) { return L + (std::log2(k) - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double a) { return T + (1.0 - a) * (H - T - B); };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << L << "\" y=\"22\" font-size=\"15\">Few-shot linear probe vs zero-shot (top-1 accuracy)</text>\n";
  for (int i = 0; i <= 10; ++i) {
    const double a = i / 10.0;
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << Y(a) << "\" y2=\"" << Y(a)
      << "\" stroke=\"#ddd\"/><text x=\"" << L - 8 << "\" y=\"" << Y(a) + 4 << "\" text-anchor=\"end\">"
      << fmt(100 * a, 0) << "</text>\n";
  }
  for (double k = std::exp2(std::floor(x0)); k <= kmax * 1.0001; k *= 2) {
    if (k < kmin * 0.9999) continue;
    o << "<line x1=\"" << X(k) << "\" x2=\"" << X(k) << "\" y1=\"" << T << "\" y2=\"" << H - B
      << "\" stroke=\"#eee\"/><text x=\"" << X(k) << "\" y=\"" << H - B + 18 << "\" text-anchor=\"middle\">" << k
      << "</text>\n";
  }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 20
    << "\" text-anchor=\"middle\">labeled examples per class (log scale)</text>\n"
    << "<text transform=\"translate(18," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">accuracy (%)</text>\n";
  int ci = 0;
  double legend_y = T + 10;
  for (auto& [_, s] : series) {
    if (s.pts.empty()) continue;
    const char* c = kColors[ci++ % 8];
    std::string path;
    for (auto& p : s.pts) {
      path += (path.empty() ? "M" : " L") + fmt(X(p[0]), 2) + "," + fmt(Y(p[1]), 2);
      if (p[2] > 0)
        o << "<line x1=\"" << X(p[0]) << "\" x2=\"" << X(p[0]) << "\" y1=\"" << Y(p[1] - p[2]) << "\" y2=\""
          << Y(p[1] + p[2]) << "\" stroke=\"" << c << "\"/>\n";
      o << "<circle cx=\"" << X(p[0]) << "\" cy=\"" << Y(p[1]) << "\" r=\"3\" fill=\"" << c << "\"/>\n";
    }
    o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << c << "\" stroke-width=\"2\"/>\n";
    if (std::isfinite(s.zeroshot))
      o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << Y(s.zeroshot) << "\" y2=\"" << Y(s.zeroshot)
        << "\" stroke=\"" << c << "\" stroke-dasharray=\"6,4\"/>\n";
    o << "<rect x=\"" << W - R + 12 << "\" y=\"" << legend_y - 9 << "\" width=\"12\" height=\"3\" fill=\"" << c
      << "\"/><text x=\"" << W - R + 30 << "\" y=\"" << legend_y - 4 << "\">" << xml_escape(s.label) << "</text>\n";
    legend_y += 16;
    if (std::isfinite(s.zeroshot)) {
      o << "<text x=\"" << W - R + 30 << "\" y=\"" << legend_y - 4 << "\" fill=\"#555\">zero-shot (dashed): "
        << fmt(100 * s.zeroshot) << "%</text>\n";
      legend_y += 16;
    }
    if (std::isfinite(s.full)) {
      o << "<text x=\"" << W - R + 30 << "\" y=\"" << legend_y - 4 << "\" fill=\"#555\">all data: " << fmt(100 * s.full)
        << "%</text>\n";
      legend_y += 16;
    }
  }
  o << "</svg>\n";
  return o.str();
}

// Robustness bars: one group per robustness result, base first then each variant.
std::string robustness_svg(const std::vector<EvalResult>& results) {
  struct Bar { std::string label; double acc; bool base; };
  std::vector<std::pair<std::string, std::vector<Bar>>> groups;
  for (auto& r : results) {
    if (r.task != "robustness" || !r.details.contains("variants")) continue;
    std::vector<Bar> bars;
    bars.push_back({r.details.value("base", std::string("base")), num(r.metrics, "base_acc1"), true});
    for (auto& v : r.details["variants"])
      if (v.contains("acc1") && v["acc1"].is_number())
        bars.push_back({v.value("name", std::string("?")), v["acc1"].get<double>(), false});
    groups.push_back({r.model + " | " + r.dataset, bars});
  }
  if (groups.empty()) return "";
  size_t nbars = 0;
  for (auto& g : groups) nbars += g.second.size();
  const double bw = 26, gap = 30, L = 60, T = 40, Hp = 260, B = 150;
  const double W = std::max(420.0, L + 20 + nbars * bw + groups.size() * gap);
  const double H = T + Hp + B;
  auto Y = [&](double a) { return T + (1.0 - a) * Hp; };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << L << "\" y=\"22\" font-size=\"15\">Accuracy under distribution shift (top-1)</text>\n";
  for (int i = 0; i <= 10; ++i)
    o << "<line x1=\"" << L << "\" x2=\"" << W - 10 << "\" y1=\"" << Y(i / 10.0) << "\" y2=\"" << Y(i / 10.0)
      << "\" stroke=\"#ddd\"/><text x=\"" << L - 6 << "\" y=\"" << Y(i / 10.0) + 4 << "\" text-anchor=\"end\">"
      << i * 10 << "</text>\n";
  double x = L + 10;
  int gi = 0;
  for (auto& [name, bars] : groups) {
    const char* c = kColors[gi++ % 8];
    const double gx = x;
    for (auto& b : bars) {
      const double a = std::isfinite(b.acc) ? std::clamp(b.acc, 0.0, 1.0) : 0.0;
      o << "<rect x=\"" << x << "\" y=\"" << Y(a) << "\" width=\"" << bw - 4 << "\" height=\"" << Y(0) - Y(a)
        << "\" fill=\"" << c << "\" fill-opacity=\"" << (b.base ? "1" : "0.6") << "\"><title>" << xml_escape(b.label)
        << ": " << fmt(100 * b.acc) << "%</title></rect>\n"
        << "<text transform=\"translate(" << x + bw / 2 << "," << Y(0) + 8 << ") rotate(60)\">" << xml_escape(b.label)
        << "</text>\n";
      x += bw;
    }
    o << "<text x=\"" << gx << "\" y=\"" << T - 4 << "\" fill=\"" << c << "\">" << xml_escape(name) << "</text>\n";
    x += gap;
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace

ReportFiles build_report(const std::vector<EvalResult>& results) {
  ReportFiles f;
  std::ostringstream md, csv;
  csv << "model,pretrained,dataset,task,metric,value\n";
  std::vector<std::string> tasks;
  for (auto& r : results)
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  md << "# Evaluation report\n\n";
  for (auto& task : tasks) {
    std::vector<std::string> cols;
    for (auto& r : results) {
      if (r.task != task) continue;
      for (auto it = r.metrics.begin(); it != r.metrics.end(); ++it)
        if ((it->is_number() || it->is_null()) && std::find(cols.begin(), cols.end(), it.key()) == cols.end())
          cols.push_back(it.key());
    }
    md << "## " << task << "\n\n| model | pretrained | dataset |";
    for (auto& c : cols) md << " " << md_escape(c) << " |";
    md << "\n|---|---|---|";
    for (size_t i = 0; i < cols.size(); ++i) md << "---:|";
    md << "\n";
    std::vector<const EvalResult*> rows;
    for (auto& r : results)
      if (r.task == task) rows.push_back(&r);
    std::stable_sort(rows.begin(), rows.end(), [](const EvalResult* a, const EvalResult* b) {
      const double ka = num(a->metrics, "fewshot_k", 1e18), kb = num(b->metrics, "fewshot_k", 1e18);
      const double fa = ka > 0 ? ka : 1e18, fb = kb > 0 ? kb : 1e18;  // all-data probe last
      return std::tie(a->model, a->pretrained, a->dataset, fa) < std::tie(b->model, b->pretrained, b->dataset, fb);
    });
    for (auto* r : rows) {
      md << "| " << md_escape(r->model) << " | " << md_escape(r->pretrained) << " | " << md_escape(r->dataset) << " |";
      for (auto& c : cols) md << " " << (r->metrics.contains(c) ? format_number(r->metrics[c]) : "") << " |";
      md << "\n";
      for (auto it = r->metrics.begin(); it != r->metrics.end(); ++it)
        if (it->is_number() || it->is_null())
          csv << csv_field(r->model) << "," << csv_field(r->pretrained) << "," << csv_field(r->dataset) << ","
              << csv_field(task) << "," << csv_field(it.key()) << ","
              << (it->is_null() ? std::string() : it->dump()) << "\n";
    }
    md << "\n";
    if (task == "robustness") {
      for (auto* r : rows) {
        if (!r->details.contains("variants")) continue;
        md << "### " << md_escape(r->model) << " on " << md_escape(r->dataset) << "\n\n| set | acc1 | change |\n|---|---:|---:|\n";
        md << "| " << md_escape(r->details.value("base", std::string("base"))) << " (base) | "
           << format_number(r->metrics.value("base_acc1", nlohmann::json())) << " | |\n";
        for (auto& v : r->details["variants"])
          md << "| " << md_escape(v.value("name", std::string("?"))) << " | " << format_number(v.value("acc1", nlohmann::json()))
             << " | " << format_number(v.value("delta", nlohmann::json())) << " |\n";
        md << "\n";
      }
    }
  }
  f.fewshot_svg = fewshot_svg(results);
  f.robustness_svg = robustness_svg(results);
  if (!f.fewshot_svg.empty()) md << "![few-shot](fewshot.svg)\n\n";
  if (!f.robustness_svg.empty()) md << "![robustness](robustness.svg)\n\n";
  f.markdown = md.str();
  f.csv = csv.str();
  return f;
}

}  // namespace clip::eval
