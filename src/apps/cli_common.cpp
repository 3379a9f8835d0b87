#include "apps/cli_common.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"

namespace clip::app {
namespace fs = std::filesystem;

namespace {
bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  static const char* exts[] = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"};
  return std::any_of(std::begin(exts), std::end(exts), [&](const char* e) { return ext == e; });
}
}  // namespace

std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (it->is_regular_file() && has_image_extension(it->path()) &&
            it->path().filename().string().front() != '.')
          found.push_back(it->path().string());
      }
      if (ec) throw Error(in + ": cannot list directory: " + ec.message());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw Error(in + ": directory holds no image files (.jpg .png .webp .bmp .gif .tif)");
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(in, ec)) {
      out.push_back(in);
    } else {
      throw Error(in + ": no such file or directory");
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

void ModelFlags::add_to(CLI::App* c) {
  c->add_option("-m,--model", model, "Model: .safetensors file or model directory")->required();
  c->add_option("--vocab", vocab, "Tokenizer vocabulary (.txt.gz, or vocab.json beside merges.txt) for a "
                                  "checkpoint without tokenizer files");
  c->add_option("--config", config, "Model config JSON (open_clip or Hugging Face) overriding the model's");
  c->add_option("--threads", threads, "Threads (0 = all cores)")->check(CLI::Range(0, 1024));
  c->add_flag("--fast-jpeg", fast_jpeg, "Decode large JPEGs at reduced scale first (faster, not bit-exact)");
  c->add_flag("--exif-orient", exif_orient, "Apply EXIF orientation (the reference does not)");
  c->add_option("--max-pixels", max_pixels, "Refuse images with more pixels (decompression-bomb guard; 0 = none)");
}

clip::Model load_model(const ModelFlags& f) {
  clip::ModelOptions opt;
  opt.vocab_path = f.vocab;
  opt.config_path = f.config;
  opt.num_threads = f.threads;
  opt.fast_jpeg = f.fast_jpeg;
  opt.exif_orient = f.exif_orient;
  opt.max_pixels = f.max_pixels;
  return clip::Model::load(f.model, opt);
}

}  // namespace clip::app
