#include "backend/matmul.h"
#include "eval/zeroshot.h"


#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "eval/metrics.h"
#include "text/prompt.h"

namespace clip::eval {

std::string format_template(const std::string& templ, const std::string& classname) {
  return format_prompt(templ, classname);
}

ClassEmbeddings class_embeddings_from_templates(const float* t, int num_classes, int num_templates, int dim) {
  if (num_classes <= 0 || num_templates <= 0 || dim <= 0) throw Error("zero-shot: no classes or templates");
  ClassEmbeddings ce;
  ce.num_classes = num_classes;
  ce.dim = dim;
  ce.weights.assign(size_t(num_classes) * dim, 0.0f);
  std::vector<double> mean(static_cast<size_t>(dim));
  for (int c = 0; c < num_classes; ++c) {
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int k = 0; k < num_templates; ++k) {
      const float* e = t + (size_t(c) * num_templates + k) * dim;
      double ss = 0;
      for (int j = 0; j < dim; ++j) ss += double(e[j]) * e[j];
      if (!(ss > 0)) throw Error("zero-shot: prompt embedding " + std::to_string(k) + " of class " + std::to_string(c) + " is zero or not finite");
      const double inv = 1.0 / std::sqrt(ss);
      for (int j = 0; j < dim; ++j) mean[size_t(j)] += e[j] * inv;
    }
    double ss = 0;
    for (double v : mean) ss += v * v;
    const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
    for (int j = 0; j < dim; ++j) ce.weights[size_t(c) * dim + j] = float(mean[size_t(j)] * inv);
  }
  return ce;
}

ClassEmbeddings build_class_embeddings(const std::vector<std::string>& classnames,
                                       const std::vector<std::string>& templates, const TextEncoder& encode,
                                       int batch) {
  if (classnames.empty() || templates.empty()) throw Error("zero-shot: no class names or no templates");
  std::vector<std::string> prompts;
  prompts.reserve(classnames.size() * templates.size());
  for (auto& c : classnames)
    for (auto& t : templates) prompts.push_back(format_template(t, c));
  std::vector<float> all, part;
  int dim = 0;
  for (size_t i = 0; i < prompts.size(); i += size_t(batch)) {
    std::vector<std::string> chunk(prompts.begin() + long(i),
                                   prompts.begin() + long(std::min(prompts.size(), i + size_t(batch))));
    const int d = encode(chunk, part);
    if (d <= 0 || part.size() != chunk.size() * size_t(d)) throw Error("zero-shot: text encoder returned a wrong shape");
    if (dim && d != dim) throw Error("zero-shot: text encoder changed its dimension");
    dim = d;
    all.insert(all.end(), part.begin(), part.end());
  }
  return class_embeddings_from_templates(all.data(), int(classnames.size()), int(templates.size()), dim);
}

std::vector<float> zeroshot_logits(const float* image_features, int64_t n, int dim, const ClassEmbeddings& classes,
                                   float scale) {
  if (dim != classes.dim)
    throw Error("zero-shot: image features have dimension " + std::to_string(dim) + " but class embeddings " +
                std::to_string(classes.dim));
  std::vector<float> img(image_features, image_features + n * dim);
  l2_normalize_rows(img.data(), n, dim);
  std::vector<float> logits(size_t(n) * classes.num_classes);
  if (n > 0)
    clip::sgemm(false, true, int(n), classes.num_classes, dim, scale, img.data(), dim, classes.weights.data(), dim, 0.0f, logits.data(), classes.num_classes);
  return logits;
}

namespace {

std::string normalize_key(const std::string& s) {
  std::string o;
  for (char ch : s)
    if (ch != '-' && ch != '_' && ch != ' ') o += char(std::tolower(static_cast<unsigned char>(ch)));
  return o;
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& path, const char* what) {
  if (!j.is_array()) throw Error(path + ": " + what + " is not a list of strings");
  std::vector<std::string> out;
  for (auto& v : j) {
    if (!v.is_string()) throw Error(path + ": " + what + " has a non-string entry");
    out.push_back(v.get<std::string>());
  }
  return out;
}

// Finds `key` ("classes" / "templates") for `dataset` anywhere the supported layouts put it.
bool find_list(const nlohmann::json& j, const std::string& key, const std::string& dataset, const std::string& path,
               std::vector<std::string>& out) {
  if (j.is_array()) { out = string_list(j, path, key.c_str()); return true; }
  if (!j.is_object()) return false;
  if (j.contains(key)) { out = string_list(j[key], path, key.c_str()); return true; }
  const nlohmann::json* scope = &j;
  if (j.contains("datasets") && j["datasets"].is_object()) scope = &j["datasets"];
  if (!dataset.empty()) {
    const std::string want = normalize_key(dataset);
    for (auto it = scope->begin(); it != scope->end(); ++it) {
      if (normalize_key(it.key()) != want) continue;
      if (it->is_array()) { out = string_list(*it, path, key.c_str()); return true; }
      if (it->is_object() && it->contains(key)) { out = string_list((*it)[key], path, key.c_str()); return true; }
    }
  }
  return false;
}

std::vector<std::string> load_list(const std::string& path, const std::string& key, const std::string& dataset) {
  const std::string text = read_text_file(path);
  size_t first = text.find_first_not_of(" \t\r\n");
  const bool json = first != std::string::npos && (text[first] == '[' || text[first] == '{') &&
                    std::filesystem::path(path).extension() != ".txt";
  std::vector<std::string> out;
  if (json) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const std::exception& e) {
      throw Error(path + ": invalid JSON: " + e.what());
    }
    if (!find_list(j, key, dataset, path, out))
      throw Error(path + ": no " + key + (dataset.empty() ? std::string() : " for dataset \"" + dataset + "\"") +
                  " (give --dataset with one of the file's keys)");
  } else {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      out.push_back(line);
    }
  }
  if (out.empty()) throw Error(path + ": the list of " + key + " is empty");
  return out;
}

}  // namespace

std::vector<std::string> load_prompt_list(const std::string& path, const std::string& key, const std::string& dataset) {
  return load_list(path, key, dataset);
}

PromptSet load_prompts(const std::string& classnames_path, const std::string& templates_path,
                       const std::string& dataset) {
  PromptSet p;
  p.classnames = load_list(classnames_path, "classes", dataset);
  p.templates = load_list(templates_path.empty() ? classnames_path : templates_path, "templates", dataset);
  for (auto& t : p.templates) format_template(t, "x");  // validates every template up front
  return p;
}

}  // namespace clip::eval
