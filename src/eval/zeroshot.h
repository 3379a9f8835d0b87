#pragma once
// Zero-shot classification as in the CLIP paper: every class name is put into each prompt
// template, the prompts are encoded, each embedding is L2-normalized, the per-class mean is
// taken and renormalized; an image's logits are 100 * norm(image) . class_embedding.
// Model-independent: the text encoder is a callback.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace clip::eval {

// Encodes `texts` into out (row-major [texts.size(), dim], any scale); returns dim.
using TextEncoder = std::function<int(const std::vector<std::string>& texts, std::vector<float>& out)>;

// "{c}" (CLIP_benchmark) or "{}" (OpenAI's notebooks) in the template becomes the class name.
std::string format_template(const std::string& templ, const std::string& classname);

struct ClassEmbeddings {
  int num_classes = 0, dim = 0;
  std::vector<float> weights;  // [num_classes, dim], unit rows
};

// Encodes classnames x templates in batches of at most `batch` prompts.
ClassEmbeddings build_class_embeddings(const std::vector<std::string>& classnames,
                                       const std::vector<std::string>& templates, const TextEncoder& encode,
                                       int batch = 256);
// The same from precomputed template embeddings, class-major [classes * templates, dim].
ClassEmbeddings class_embeddings_from_templates(const float* template_embeddings, int num_classes,
                                                int num_templates, int dim);

// logits [n, num_classes] = scale * norm(image_features) @ weights^T.
std::vector<float> zeroshot_logits(const float* image_features, int64_t n, int dim, const ClassEmbeddings& classes,
                                   float scale = 100.0f);

struct PromptSet {
  std::vector<std::string> classnames;
  std::vector<std::string> templates;
};

// Class names and templates from files. Each path may be:
//   * a text file: one entry per line (blank lines and lines starting with '#' skipped);
//   * a JSON list of strings;
//   * a JSON object keyed by dataset (CLIP_benchmark's en_classnames.json /
//     en_zeroshot_templates.json), looked up by `dataset` (case-insensitive, '-'/'_' ignored);
//   * an object with "classes"/"templates" (imagenet_classes_templates.json), possibly under
//     "datasets" -> name (clip_prompts_all.json).
// A single JSON file may hold both lists; `templates_path` may then be empty. Throws
// clip::Error naming the file when the dataset is not found or a list is empty.
PromptSet load_prompts(const std::string& classnames_path, const std::string& templates_path,
                       const std::string& dataset);
// One list ("classes" or "templates") from such a file.
std::vector<std::string> load_prompt_list(const std::string& path, const std::string& key, const std::string& dataset);

}  // namespace clip::eval
