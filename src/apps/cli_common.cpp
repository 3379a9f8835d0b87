#include "apps/cli_common.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "core/embeddings_file.h"
#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "search/indexer.h"  // model_identity
#include "data/datasets.h"  // is_image_file_name: the formats the decoder reads

namespace clip::app {
namespace fs = std::filesystem;

namespace {
bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n.front() == '.';
}
}  // namespace

std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      auto it = fs::recursive_directory_iterator(in, fs::directory_options::skip_permission_denied, ec);
      for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (hidden(it->path())) {
          if (it->is_directory(ec)) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file(ec) && data::is_image_file_name(it->path().string())) found.push_back(it->path().string());
      }
      if (ec) throw Error(in + ": cannot list folder: " + ec.message());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw Error(in + ": folder holds no image files (.jpg .jpeg .png .webp .bmp .gif)");
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(in, ec)) {
      out.push_back(in);
    } else {
      throw Error(in + ": no such file or folder");
    }
  }
  return out;
}

std::vector<std::string> read_text_lines(const std::string& path, bool keep_empty) {
  std::string all = read_text_file(path);
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    if (nl == std::string::npos) nl = all.size();
    std::string line = all.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (keep_empty || !line.empty()) lines.push_back(std::move(line));
    pos = nl + 1;
  }
  return lines;
}

std::vector<std::string> split_labels(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    std::string t = s.substr(pos, c - pos);
    auto b = t.find_first_not_of(" \t"), e = t.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(t.substr(b, e - b + 1));
    pos = c + 1;
  }
  return out;
}

int logical_cpus() {
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? int(n) : 1;
}

CLI::Validator threads_range() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        long n = 0;
        try {
          size_t used = 0;
          n = std::stol(v, &used);
          if (used != v.size()) return "--threads " + v + ": not a whole number";
        } catch (const std::exception&) {
          return "--threads " + v + ": not a whole number";
        }
        if (n < 0 || n > logical_cpus())
          return "--threads " + v + ": this machine has " + std::to_string(logical_cpus()) +
                 " logical CPUs (give 1.." + std::to_string(logical_cpus()) + ", or 0 for all)";
        return "";
      },
      "0..CPUs");
}

void check_output_file(const std::string& path, const std::string& flag) {
  std::error_code ec;
  if (path.empty()) throw Error(flag + ": empty path");
  if (fs::is_directory(path, ec)) throw Error(flag + " " + path + ": is a folder; give a file name");
  const fs::path dir = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) throw Error(flag + " " + path + ": no folder " + dir.string());
  if (::access(dir.c_str(), W_OK) != 0) throw Error(flag + " " + path + ": folder " + dir.string() + " is not writable");
  if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0)
    throw Error(flag + " " + path + ": the file exists and is not writable");
}

void ModelFlags::add_to(CLI::App* c, bool model_required) {
  c->add_option("-m,--model", model, "Model: .safetensors file or model directory")->required(model_required);
  c->add_option("--vocab", vocab, "Tokenizer vocabulary (.txt.gz, or vocab.json beside merges.txt) for a "
                                  "checkpoint without tokenizer files [the model's, $CLIP_VOCAB, OpenAI's]");
  c->add_option("--config", config, "Model config JSON (open_clip or Hugging Face) overriding the model's");
  c->add_option("--threads", threads, "Threads (0 = all cores)")->check(threads_range())->capture_default_str();
  c->add_option("-b,--batch-size", batch_size, "Images or texts per forward pass")
      ->check(CLI::Range(1, 4096).description("1..4096"))
      ->capture_default_str();
  c->add_flag("--fast-jpeg", fast_jpeg, "Decode large JPEGs at reduced scale first (faster, not bit-exact)");
  c->add_flag("--exif-orient", exif_orient, "Apply EXIF orientation (the reference does not)");
  c->add_option("--max-pixels", max_pixels, "Refuse images with more pixels (decompression-bomb guard; 0 = none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_precision_option(c, precision);
}

void add_precision_option(CLI::App* c, std::string& precision) {
  c->add_option("--precision", precision,
                "Transformer products: fp32 (the reference numbers), bf16 (where the CPU has AVX512-BF16 or AMX), "
                "int8 (int8 weights, per-row int8 inputs; where it has AVX512-VNNI or AMX) or int4 (4-bit weights in "
                "q4_0 blocks, any CPU); see clip info --system. Weights stored q4_0/q8_0 in a GGUF file run as stored")
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int4"}))
      ->capture_default_str();
}

clip::Model load_model(const ModelFlags& f) {
  clip::ModelOptions opt;
  opt.vocab_path = f.vocab;
  opt.config_path = f.config;
  opt.num_threads = f.threads;
  opt.fast_jpeg = f.fast_jpeg;
  opt.exif_orient = f.exif_orient;
  opt.max_pixels = f.max_pixels;
  opt.precision = f.precision;
  return clip::Model::load(f.model, opt);
}

clip::Model load_index_model(const search::IndexDb& db, ModelFlags& flags) {
  const auto recorded = db.model();
  if (!recorded) throw Error(db.path() + ": the index is empty: run clip index first");
  if (flags.model.empty()) flags.model = recorded->path;
  clip::Model model = load_model(flags);
  if (search::model_identity(model, flags.model).fingerprint != recorded->fingerprint)
    throw Error(db.path() + ": indexed with another model (" + recorded->description + ", from " + recorded->path +
                "); --model " + flags.model + " is " + model.describe());
  return model;
}

void ImageFlags::add_to(CLI::App* c, const std::string& what) {
  c->add_option("images", positional, what + ": image files and folders (searched recursively, sorted)");
  c->add_option("--images", named, "The same as the positional IMAGES (either or both)");
  c->add_flag("--strict", strict, "Stop at the first unreadable image (default: skip it with a warning)");
}

std::vector<std::string> ImageFlags::paths() const {
  std::vector<std::string> all = positional;
  all.insert(all.end(), named.begin(), named.end());
  return expand_image_inputs(all);
}

void TextFlags::add_to(CLI::App* c) {
  c->add_option("--text", literal, "A text (repeatable)");
  c->add_option("--texts-file,--texts", files, "A file of texts, one per line (repeatable)")->check(CLI::ExistingFile);
  c->add_flag("--truncate", truncate, "Cut texts longer than the model's context (default: an error naming them)");
}

std::vector<std::string> TextFlags::texts(bool keep_empty_lines) const {
  std::vector<std::string> out;
  for (const auto& f : files) {
    auto l = read_text_lines(f, keep_empty_lines);
    out.insert(out.end(), l.begin(), l.end());
  }
  out.insert(out.end(), literal.begin(), literal.end());
  return out;
}

clip::Embeddings encode_images(const char* command, const clip::Model& model, const std::vector<std::string>& paths,
                               int batch_size, bool strict, std::vector<size_t>& kept) {
  clip::Embeddings all;
  all.cols = model.embed_dim();
  kept.clear();
  std::vector<clip::SkippedInput> skipped;
  Progress progress(std::string(command) + " images", int64_t(paths.size()), "img");
  for (size_t s = 0; s < paths.size(); s += size_t(batch_size)) {
    const size_t n = std::min(paths.size() - s, size_t(batch_size));
    std::vector<std::string> chunk(paths.begin() + long(s), paths.begin() + long(s + n));
    clip::Embeddings e;
    if (strict) {
      e = model.encode_image_files(chunk, batch_size);
    } else {
      std::vector<clip::SkippedInput> bad;
      e = model.encode_image_files(chunk, batch_size, bad);
      size_t b = 0;
      for (size_t i = 0; i < n; ++i) {
        if (b < bad.size() && size_t(bad[b].index) == i) {
          // Decoder messages start with the file's name.
          std::string why = bad[b].reason;
          if (why.rfind(chunk[i] + ": ", 0) == 0) why = why.substr(chunk[i].size() + 2);
          std::fprintf(stderr, "clip %s: warning: skipped %s: %s\n", command, chunk[i].c_str(), why.c_str());
          skipped.push_back(bad[b]);
          ++b;
        } else {
          kept.push_back(s + i);
        }
      }
    }
    if (strict)
      for (size_t i = 0; i < n; ++i) kept.push_back(s + i);
    all.data.insert(all.data.end(), e.data.begin(), e.data.end());
    all.rows += e.rows;
    progress.add(int64_t(n));
  }
  progress.finish();
  if (!skipped.empty()) {
    if (kept.empty())
      throw Error("none of the " + std::to_string(paths.size()) + " images could be read (see the warnings above)");
    std::fprintf(stderr, "clip %s: skipped %zu of %zu images that could not be read; the other %zu are in the output\n",
                 command, skipped.size(), paths.size(), kept.size());
  }
  return all;
}

clip::Embeddings encode_texts(const char* command, const clip::Model& model, const std::vector<std::string>& texts,
                              int batch_size, bool truncate) {
  std::vector<int64_t> cut;
  clip::Embeddings e = model.encode_texts(texts, batch_size, truncate, &cut);
  if (!cut.empty()) {
    std::string which;
    for (size_t i = 0; i < cut.size() && i < 5; ++i) which += (i ? ", " : "") + std::to_string(cut[i] + 1);
    if (cut.size() > 5) which += ", ...";
    std::fprintf(stderr, "clip %s: note: %zu of %zu texts were longer than %d tokens and were truncated (text %s)\n",
                 command, cut.size(), texts.size(), model.context_length(), which.c_str());
  }
  return e;
}

SavedEmbeddings read_saved_embeddings(const std::string& npy_path) {
  const EmbeddingRows r = read_embedding_rows(npy_path);
  SavedEmbeddings s;
  s.images.cols = s.texts.cols = r.cols;
  for (int64_t i = 0; i < r.rows; ++i) {
    const bool image = r.kinds[size_t(i)] == "image";
    clip::Embeddings& dst = image ? s.images : s.texts;
    const float* row = r.data.data() + size_t(i) * size_t(r.cols);
    dst.data.insert(dst.data.end(), row, row + r.cols);
    ++dst.rows;
    (image ? s.image_sources : s.text_sources).push_back(r.sources[size_t(i)]);
  }
  return s;
}

void print_json_line(const nlohmann::json& j) {
  const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
}

}  // namespace clip::app
