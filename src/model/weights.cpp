#include "model/weights.h"

#include "nn/clip_network.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/model_cache.h"
#include "core/safetensors.h"
#include "core/gguf.h"
#include "core/torch_checkpoint.h"
#include "model/gguf_clip.h"

namespace clip {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Hugging Face <-> canonical (OpenAI) names: one table, used in both directions.

struct TopLevelName {
  const char* canonical;
  const char* hf;
  bool transposed;
};
const TopLevelName kTopLevel[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight", false},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight", false},
    {"ln_final.weight", "text_model.final_layer_norm.weight", false},
    {"ln_final.bias", "text_model.final_layer_norm.bias", false},
    {"text_projection", "text_projection.weight", true},
    {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", false},
    {"visual.class_embedding", "vision_model.embeddings.class_embedding", false},
    {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", false},
    {"visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", false},
    {"visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", false},
    {"visual.ln_post.weight", "vision_model.post_layernorm.weight", false},
    {"visual.ln_post.bias", "vision_model.post_layernorm.bias", false},
    {"visual.proj", "visual_projection.weight", true},
    {"logit_scale", "logit_scale", false},
    {"logit_bias", "logit_bias", false},  // SigLIP
};

struct BlockName {
  const char* canonical;
  std::vector<const char*> hf;  // 3 entries: q, k, v concatenated along dim 0
};
const BlockName kBlock[] = {
    {"attn.in_proj_weight", {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}},
    {"attn.in_proj_bias", {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}},
    {"attn.out_proj.weight", {"self_attn.out_proj.weight"}},
    {"attn.out_proj.bias", {"self_attn.out_proj.bias"}},
    {"ln_1.weight", {"layer_norm1.weight"}},
    {"ln_1.bias", {"layer_norm1.bias"}},
    {"mlp.c_fc.weight", {"mlp.fc1.weight"}},
    {"mlp.c_fc.bias", {"mlp.fc1.bias"}},
    {"mlp.c_proj.weight", {"mlp.fc2.weight"}},
    {"mlp.c_proj.bias", {"mlp.fc2.bias"}},
    {"ln_2.weight", {"layer_norm2.weight"}},
    {"ln_2.bias", {"layer_norm2.bias"}},
};

struct BlockPrefix {
  const char* canonical;
  const char* hf;
};
const BlockPrefix kBlockPrefix[] = {
    {"visual.transformer.resblocks.", "vision_model.encoder.layers."},
    {"transformer.resblocks.", "text_model.encoder.layers."},
};

// "<prefix><N>.<rest>" -> N and rest; false if `name` has another form.
bool split_block(const std::string& name, const std::string& prefix, std::string& index, std::string& rest) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t p = prefix.size(), q = p;
  while (q < name.size() && name[q] >= '0' && name[q] <= '9') ++q;
  if (q == p || q >= name.size() || name[q] != '.') return false;
  index = name.substr(p, q - p);
  rest = name.substr(q + 1);
  return true;
}

// HF name -> canonical name, part (0..2 for q/k/v) and whether it is stored transposed.
bool hf_to_canonical(const std::string& hf, std::string& canonical, int& part, bool& transposed) {
  part = 0;
  transposed = false;
  for (const auto& t : kTopLevel)
    if (hf == t.hf) {
      canonical = t.canonical;
      transposed = t.transposed;
      return true;
    }
  for (const auto& bp : kBlockPrefix) {
    std::string index, rest;
    if (!split_block(hf, bp.hf, index, rest)) continue;
    for (const auto& b : kBlock)
      for (size_t i = 0; i < b.hf.size(); ++i)
        if (rest == b.hf[i]) {
          canonical = std::string(bp.canonical) + index + "." + b.canonical;
          part = int(i);
          return true;
        }
  }
  return false;
}

std::string quote_name(const std::string& s) { return "'" + s + "'"; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Names that some exporters keep in the state dict but that are not weights.
bool ignorable_name(const std::string& name) {
  // (OpenAI's TorchScript archives also hold these as tensors, and each text block's causal
  // mask as an attribute "attn_mask".)
  static const std::set<std::string> exact = {"input_resolution", "context_length", "vocab_size"};
  auto ends_with = [&](const char* suffix) {
    size_t n = std::strlen(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  return exact.count(name) || ends_with("num_batches_tracked") || ends_with("position_ids") || ends_with("attn_mask");
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64; }

// ---------------------------------------------------------------------------------------------
// Shape inference helpers.

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

const std::vector<int64_t>& need_shape(const ShapeMap& shapes, const std::string& name, size_t rank,
                                       const std::string& source) {
  auto it = shapes.find(name);
  if (it == shapes.end())
    throw Error(source + ": cannot infer the architecture: missing tensor " + quote_name(name));
  if (it->second.size() != rank)
    throw Error(source + ": cannot infer the architecture: tensor " + quote_name(name) + " has shape " +
                shape_string(it->second) + ", expected " + std::to_string(rank) + " dimensions");
  return it->second;
}

// Number of distinct N in names "<prefix>N.<suffix...>" (build_model's layer count).
int count_blocks(const ShapeMap& shapes, const std::string& prefix, const std::string& suffix = "") {
  std::set<std::string> seen;
  for (const auto& [name, shape] : shapes) {
    std::string index, rest;
    if (split_block(name, prefix, index, rest) && (suffix.empty() || rest == suffix)) seen.insert(index);
  }
  return int(seen.size());
}

int to_int(int64_t v, const std::string& source, const std::string& what) {
  if (v < 0 || v > (1 << 24)) throw Error(source + ": implausible " + what + " " + std::to_string(v));
  return int(v);
}

int sqrt_round(int64_t v) { return int(std::lround(std::sqrt(double(std::max<int64_t>(v, 0))))); }

// ---------------------------------------------------------------------------------------------
// Locating the files of a model.

struct ModelFiles {
  std::string weights;
  std::string model_dir;
  std::string openclip_config;  // open_clip_config.json (or an open_clip-format config.json)
  std::string hf_config;        // config.json
};

void reject_unsupported_weights_file(const std::string& path) {
  if (ends_with_ci(path, ".pkl"))
    throw Error(path + ": raw pickles are not loaded (unpickling can run code); PyTorch's zip checkpoints (.pt, "
                       ".pth, .bin) are read, or convert it to .safetensors (see docs/weights.md)");
  if (ends_with_ci(path, ".onnx"))
    throw Error(path + ": ONNX models are not supported; use the model's .safetensors weights");
}

ModelFiles locate_model_files(const std::string& given) {
  ModelFiles m;
  std::error_code ec;
  // "org/name" pulled before (clip pull) resolves to its cached snapshot, with no network.
  const std::string path = resolve_model_path(given);
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw Error(path + ": no such file or directory" +
                (looks_like_repo_id(path.substr(0, path.find('@')))
                     ? std::string(" (nor a model pulled into ") + clip_home() + ": clip pull " + path.substr(0, path.find('@')) + ")"
                     : std::string()));
  if (!fs::is_directory(st)) {
    reject_unsupported_weights_file(path);
    m.weights = path;
    return m;
  }
  m.model_dir = path;
  const fs::path dir(path);
  for (const char* name : {"model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors"})
    if (fs::is_regular_file(dir / name, ec)) {
      m.weights = (dir / name).string();
      break;
    }
  std::vector<std::string> safetensors, others;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    std::string name = e.path().filename().string();
    if (ends_with_ci(name, ".safetensors")) safetensors.push_back(name);
    else if (ends_with_ci(name, ".bin") || ends_with_ci(name, ".pt") || ends_with_ci(name, ".pth") ||
             ends_with_ci(name, ".onnx"))
      others.push_back(name);
  }
  for (const char* sub : {"visual", "textual"})  // Immich's layout: ONNX models in subfolders
    if (fs::is_regular_file(dir / sub / "model.onnx", ec)) others.push_back(std::string(sub) + "/model.onnx");
  std::sort(safetensors.begin(), safetensors.end());
  if (m.weights.empty()) {
    if (safetensors.size() == 1) {
      m.weights = (dir / safetensors[0]).string();
    } else if (safetensors.size() > 1) {
      std::string list;
      for (const auto& s : safetensors) list += (list.empty() ? "" : ", ") + s;
      throw Error(path + ": several .safetensors files (" + list + "); name the one to load");
    } else {
      // No safetensors: PyTorch's own files, by their usual names (read without running them).
      for (const char* name : {"pytorch_model.bin", "open_clip_pytorch_model.bin", "model.pt"})
        if (fs::is_regular_file(dir / name, ec)) {
          m.weights = (dir / name).string();
          break;
        }
      if (m.weights.empty()) {
        std::string msg = path + ": no .safetensors weights (nor pytorch_model.bin, open_clip_pytorch_model.bin, "
                                 "model.pt) in this directory";
        if (!others.empty()) {
          msg += " (found";
          for (const auto& o : others) msg += " " + o;
          msg += "; name the weights file to load, or convert ONNX models' weights, see docs/weights.md)";
        }
        throw Error(msg);
      }
    }
  }
  if (fs::is_regular_file(dir / "open_clip_config.json", ec)) m.openclip_config = (dir / "open_clip_config.json").string();
  if (fs::is_regular_file(dir / "config.json", ec)) m.hf_config = (dir / "config.json").string();
  return m;
}

// ---------------------------------------------------------------------------------------------
// Where each canonical tensor comes from in the file.

struct Source {
  std::vector<const SafetensorsTensorInfo*> parts;  // 1, or 3 (q, k, v) concatenated on dim 0
  bool transposed = false;                          // 2-D, stored as [cols, rows]
  std::vector<int64_t> shape;                       // canonical shape
  std::string file_name;                            // the name(s) in the file, for messages
  bool broken = false;                              // already reported as a problem
};

void append_limited(std::string& out, const std::vector<std::string>& items, size_t limit) {
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += " (and " + std::to_string(items.size() - limit) + " more)";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const char* naming_scheme_name(NamingScheme s) {
  switch (s) {
    case NamingScheme::OpenAI: return "openai";
    case NamingScheme::OpenCLIP: return "open_clip";
    case NamingScheme::HuggingFace: return "huggingface";
  }
  return "?";
}

HfTensorMapping hf_mapping_for(const std::string& canonical) {
  for (const auto& t : kTopLevel)
    if (canonical == t.canonical) return {{t.hf}, t.transposed};
  for (const auto& bp : kBlockPrefix) {
    std::string index, rest;
    if (!split_block(canonical, bp.canonical, index, rest)) continue;
    for (const auto& b : kBlock)
      if (rest == b.canonical) {
        HfTensorMapping m;
        for (const char* h : b.hf) m.names.push_back(std::string(bp.hf) + index + "." + h);
        return m;
      }
  }
  throw Error("tensor " + quote_name(canonical) + " has no Hugging Face CLIPModel counterpart");
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& c) {
  return nn::parameter_schema(c);
}

int64_t parameter_count(const ModelConfig& config) {
  int64_t n = 0;
  for (const auto& [name, shape] : expected_tensors(config)) {
    if (name.find("running_") != std::string::npos) continue;  // batch-norm buffers
    int64_t k = 1;
    for (int64_t d : shape) k *= d;
    n += k;
  }
  return n;
}

ModelConfig infer_config_from_shapes(const ShapeMap& shapes, const std::string& source) {
  ModelConfig c;
  c.activation = Activation::QuickGELU;
  c.layer_norm_eps = 1e-5f;

  // Text tower (build_model: embed_dim, context_length, vocab_size, width, heads, layers).
  const auto& proj = need_shape(shapes, "text_projection", 2, source);
  const auto& tok = need_shape(shapes, "token_embedding.weight", 2, source);
  const auto& pos = need_shape(shapes, "positional_embedding", 2, source);
  const auto& lnf = need_shape(shapes, "ln_final.weight", 1, source);
  c.embed_dim = to_int(proj[1], source, "embed_dim");
  c.text.context_length = to_int(pos[0], source, "context_length");
  c.text.vocab_size = to_int(tok[0], source, "vocab_size");
  c.text.width = to_int(lnf[0], source, "text width");
  c.text.heads = c.text.width / 64;
  c.text.layers = count_blocks(shapes, "transformer.resblocks.", "attn.in_proj_weight");
  if (auto it = shapes.find("transformer.resblocks.0.mlp.c_fc.weight"); it != shapes.end() && !it->second.empty())
    c.text.mlp_dim = to_int(it->second[0], source, "text mlp width");
  else
    c.text.mlp_dim = 4 * c.text.width;

  auto& v = c.vision;
  if (shapes.count("visual.proj")) {
    const auto& conv = need_shape(shapes, "visual.conv1.weight", 4, source);
    const auto& vpos = need_shape(shapes, "visual.positional_embedding", 2, source);
    v.width = to_int(conv[0], source, "vision width");
    v.layers = count_blocks(shapes, "visual.transformer.resblocks.", "attn.in_proj_weight");
    v.patch_size = to_int(conv[3], source, "patch size");
    v.image_size = v.patch_size * sqrt_round(vpos[0] - 1);
    v.heads = v.width / 64;
    if (auto it = shapes.find("visual.transformer.resblocks.0.mlp.c_fc.weight");
        it != shapes.end() && !it->second.empty())
      v.mlp_dim = to_int(it->second[0], source, "vision mlp width");
    else
      v.mlp_dim = 4 * v.width;
  } else {
    v.resnet_layers.clear();
    for (int stage = 1; stage <= 4; ++stage)
      v.resnet_layers.push_back(count_blocks(shapes, "visual.layer" + std::to_string(stage) + "."));
    if (v.resnet_layers == std::vector<int>{0, 0, 0, 0})
      throw Error(source + ": cannot infer the architecture: neither 'visual.proj' (ViT) nor "
                           "'visual.layer1.*' (ResNet) tensors are present");
    const auto& c1 = need_shape(shapes, "visual.layer1.0.conv1.weight", 4, source);
    const auto& apos = need_shape(shapes, "visual.attnpool.positional_embedding", 2, source);
    v.width = to_int(c1[0], source, "vision width");
    v.image_size = sqrt_round(apos[0] - 1) * 32;
    v.heads = v.width * 32 / 64;
    v.layers = 0;
    v.patch_size = 0;
    v.mlp_dim = 0;
  }
  validate_model_config(c, source);
  c.name = known_model_name(c);
  return c;
}

bool LoadedCheckpoint::is_mapped(const float* data, int64_t count) const {
  if (!mapping || !mapping->data()) return false;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const auto map = reinterpret_cast<uintptr_t>(mapping->data());
  return begin >= map && begin + size_t(count) * sizeof(float) <= map + mapping->size();
}

void LoadedCheckpoint::release_pages(const float* data, int64_t count) const {
  if (count > 0 && is_mapped(data, count))
    mapping->release_pages(data, size_t(count) * sizeof(float));
}

const LoadedCheckpoint::BlockRows* LoadedCheckpoint::block_rows_for(const float* data, int64_t rows, int64_t cols,
                                                                   int64_t& first_row) const {
  for (const auto& [name, blocks] : block_weights) {
    auto it = tensors.find(name);
    if (it == tensors.end() || blocks.cols != cols || it->second.dtype != DType::F32) continue;
    const float* begin = it->second.f32();
    if (data < begin || data + rows * cols > begin + blocks.rows * cols || (data - begin) % cols != 0) continue;
    first_row = (data - begin) / cols;
    return &blocks;
  }
  return nullptr;
}

void LoadedCheckpoint::discard_dequantized(const float* data, int64_t count) const {
  if (count <= 0) return;
  // In the in-memory image of the file, or in a copy made at load (Hugging Face's q/k/v
  // concatenated into in_proj): either way memory of this checkpoint's own.
  if (is_mapped(data, count))
    mapping->discard_pages(data, size_t(count) * sizeof(float));
  else
    discard_whole_pages(data, size_t(count) * sizeof(float));
}

const Tensor& LoadedCheckpoint::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    throw Error((weights_path.empty() ? std::string("checkpoint") : weights_path) + ": missing tensor " + quote_name(name));
  if (!expected_shape.empty() && it->second.shape != expected_shape)
    throw Error((weights_path.empty() ? std::string("checkpoint") : weights_path) + ": tensor " + quote_name(name) +
                " has shape " + it->second.shape_str() + ", expected " + shape_string(expected_shape));
  return it->second;
}

LoadedCheckpoint load_checkpoint(const std::string& path) { return load_checkpoint(path, LoadOptions{}); }

LoadedCheckpoint load_checkpoint(const std::string& path, const LoadOptions& options) {
  ModelFiles files = locate_model_files(path);
  // PyTorch's zip checkpoints (torch.save, TorchScript) are read by the restricted reader
  // (core/torch_checkpoint.h), clip.cpp's GGUF files by model/gguf_clip.h (which also gives the
  // architecture), into safetensors bytes in memory; from there one path.
  std::optional<ModelConfig> embedded_config;
  std::map<std::string, LoadedCheckpoint::BlockRows> gguf_blocks;
  auto open_weights = [&]() -> SafetensorsFile {
    if (is_torch_checkpoint_name(files.weights))
      return SafetensorsFile::from_mapping(
          MappedFile::from_bytes(serialize_safetensors(read_torch_checkpoint_file(files.weights)), files.weights));
    if (ends_with_ci(files.weights, ".gguf")) {
      const GgufFile g = GgufFile::open(files.weights);
      embedded_config = clip_gguf_config(g);
      if (!options.validate_only) gguf_blocks = clip_gguf_block_weights(g, *embedded_config);
      return SafetensorsFile::from_mapping(MappedFile::from_bytes(
          clip_gguf_safetensors_image(g, *embedded_config, options.blocks_without_f32 ? &gguf_blocks : nullptr),
          files.weights));
    }
    return SafetensorsFile::open(files.weights);
  };
  SafetensorsFile file = open_weights();
  const std::string& wpath = files.weights;

  LoadedCheckpoint ck;
  ck.weights_path = wpath;
  ck.model_dir = files.model_dir;
  {
    std::error_code ec;
    ck.file_size = uint64_t(fs::file_size(wpath, ec));
    if (ec) ck.file_size = file.file_size();
  }
  ck.keepalive = file.mapping();
  ck.mapping = file.mapping();
  ck.block_weights = std::move(gguf_blocks);

  // Floating tensors by name; integer ones (num_batches_tracked, position_ids) are ignored.
  // A "module." prefix on every name (a DistributedDataParallel state dict) is dropped.
  std::vector<const SafetensorsTensorInfo*> floats;
  std::map<std::string, DType> non_float;
  std::map<DType, int64_t> elements_by_dtype;
  for (const auto& t : file.tensors()) {
    if (is_float(t.dtype)) {
      floats.push_back(&t);
      elements_by_dtype[t.dtype] += t.numel();
    } else {
      non_float[t.name] = t.dtype;
    }
  }
  if (floats.empty()) throw Error(wpath + ": holds no floating-point tensors; not a CLIP checkpoint");
  ck.stored_dtype = std::max_element(elements_by_dtype.begin(), elements_by_dtype.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; })->first;
  std::string strip;
  if (std::all_of(floats.begin(), floats.end(), [](const auto* t) { return t->name.rfind("module.", 0) == 0; }))
    strip = "module.";
  auto name_of = [&](const SafetensorsTensorInfo* t) { return t->name.substr(strip.size()); };

  const bool hf = std::any_of(floats.begin(), floats.end(), [&](const auto* t) {
    std::string n = name_of(t);
    return n.rfind("vision_model.", 0) == 0 || n.rfind("text_model.", 0) == 0;
  });

  std::map<std::string, Source> sources;
  std::vector<std::string> unexpected;
  for (const auto* t : floats) {
    std::string name = name_of(t);
    std::string canonical = name;
    int part = 0;
    bool transposed = false;
    if (hf && !hf_to_canonical(name, canonical, part, transposed)) {
      if (!ignorable_name(name)) unexpected.push_back(quote_name(t->name));
      continue;
    }
    Source& s = sources[canonical];
    s.transposed = transposed;
    if (hf && canonical.find(".attn.in_proj_") != std::string::npos) s.parts.resize(3, nullptr);
    else s.parts.resize(1, nullptr);
    s.parts[size_t(part)] = t;
  }
  // Canonical shapes; q/k/v must all be present and alike to be packed.
  std::vector<std::string> problems;
  for (auto it = sources.begin(); it != sources.end();) {
    Source& s = it->second;
    const std::string& canonical = it->first;
    if (s.parts.size() == 3) {
      auto m = hf_mapping_for(canonical);
      std::vector<std::string> missing;
      for (size_t i = 0; i < 3; ++i)
        if (!s.parts[i]) missing.push_back(quote_name(m.names[i]));
      // A broken triple stays in the map (its shape guessed from a present part) so that
      // layer counting still sees the layer; its problem is reported once, below.
      if (!missing.empty()) {
        std::string msg = "missing tensor ";
        append_limited(msg, missing, 3);
        problems.push_back(msg);
        s.broken = true;
        for (const auto* p : s.parts)
          if (p && !p->shape.empty()) { s.shape = p->shape; s.shape[0] *= 3; break; }
        ++it;
        continue;
      }
      const auto& q = s.parts[0]->shape;
      if (q.empty() || s.parts[1]->shape != q || s.parts[2]->shape != q) {
        problems.push_back("tensors " + quote_name(m.names[0]) + ", " + quote_name(m.names[1]) + ", " + quote_name(m.names[2]) +
                           " have shapes " + shape_string(q) + ", " + shape_string(s.parts[1]->shape) + ", " +
                           shape_string(s.parts[2]->shape) + "; expected three equal shapes");
        s.broken = true;
        s.shape = q;
        if (!s.shape.empty()) s.shape[0] *= 3;
        ++it;
        continue;
      }
      s.shape = q;
      s.shape[0] *= 3;
      s.file_name = m.names[0] + " / k_proj / v_proj";
    } else {
      s.shape = s.parts[0]->shape;
      s.file_name = s.parts[0]->name;
      if (s.transposed) {
        if (s.shape.size() != 2) {
          problems.push_back("tensor " + quote_name(s.file_name) + " has shape " + shape_string(s.shape) +
                             ", expected 2 dimensions");
          s.broken = true;
          ++it;
          continue;
        }
        std::swap(s.shape[0], s.shape[1]);
      }
    }
    ++it;
  }

  // The architecture: an explicit config, the directory's config, or build_model's inference.
  ShapeMap shapes;
  for (const auto& [name, s] : sources) shapes[name] = s.shape;
  std::string config_path = options.config_path;
  if (config_path.empty()) {
    // Prefer the config written for this naming scheme; a directory from open_clip's hub
    // export holds both an open_clip and an HF model.
    config_path = hf ? (files.hf_config.empty() ? files.openclip_config : files.hf_config)
                     : (files.openclip_config.empty() ? files.hf_config : files.openclip_config);
  }
  ConfigFormat format = ConfigFormat::OpenCLIP;
  if (embedded_config && options.config_path.empty()) {
    ck.config = *embedded_config;  // the GGUF's own hyper-parameters
    format = ConfigFormat::HuggingFace;
  } else if (!config_path.empty()) {
    ck.config = load_model_config(config_path, &format);
    ck.config_path = config_path;
  } else {
    try {
      ck.config = infer_config_from_shapes(shapes, wpath);
    } catch (const Error& e) {
      if (!problems.empty()) throw Error(wpath + ": " + problems.front());
      throw Error(std::string(e.what()) + (hf ? " (Hugging Face names are mapped to OpenAI's)" : ""));
    }
  }
  ck.scheme = hf ? NamingScheme::HuggingFace
                 : (!config_path.empty() && format == ConfigFormat::OpenCLIP ? NamingScheme::OpenCLIP
                                                                            : NamingScheme::OpenAI);
  if (hf && ck.config.vision.is_resnet())
    throw Error(wpath + ": Hugging Face CLIPModel names with a ResNet config; HF has no ResNet CLIP");

  // Every expected tensor present with its shape; nothing unexpected left over.
  auto display = [&](const std::string& canonical) {
    if (!hf) return quote_name(strip + canonical);
    auto m = hf_mapping_for(canonical);
    return quote_name(m.names[0]) + (m.names.size() == 3 ? " (with k_proj, v_proj)" : "");
  };
  const auto expected = expected_tensors(ck.config);
  std::vector<std::string> missing;
  std::set<std::string> expected_names;
  for (auto& [name, shape] : expected) {
    expected_names.insert(name);
    auto it = sources.find(name);
    if (it != sources.end() && it->second.broken) continue;  // reported above
    if (it == sources.end()) {
      auto nf = non_float.find(strip + name);
      if (nf != non_float.end()) {
        problems.push_back("tensor " + quote_name(nf->first) + " has dtype " + dtype_name(nf->second) +
                           ", expected a floating-point dtype");
        continue;
      }
      missing.push_back(display(name));
      continue;
    }
    std::vector<int64_t> found = it->second.shape;
    if ((name == "logit_scale" || name == "logit_bias") && found == std::vector<int64_t>{1}) found = {};
    if (found != shape) {
      std::string what = it->second.transposed ? " (transposed: " + shape_string(it->second.parts[0]->shape) + " in the file)" : "";
      problems.push_back("tensor " + display(name) + " has shape " + shape_string(found) + what + ", expected " +
                         shape_string(shape));
    }
  }
  for (const auto& [name, s] : sources)
    if (!expected_names.count(name) && !ignorable_name(name)) unexpected.push_back(display(name));

  if (!missing.empty() || !problems.empty() || !unexpected.empty()) {
    std::string msg = wpath + ": does not match the model architecture (" +
                      (embedded_config ? "from the file's metadata" : config_path.empty() ? "inferred from tensor shapes" : "from " + config_path) + ": " +
                      describe_model_config(ck.config) + "): ";
    std::vector<std::string> parts;
    if (!missing.empty()) {
      std::string m = missing.size() == 1 ? "missing tensor " : "missing tensors ";
      append_limited(m, missing, 8);
      parts.push_back(m);
    }
    if (!problems.empty()) {
      std::string p;
      append_limited(p, problems, 5);
      parts.push_back(p);
    }
    if (!unexpected.empty()) {
      std::string u = "unexpected tensor" + std::string(unexpected.size() == 1 ? " " : "s ");
      append_limited(u, unexpected, 5);
      u += " (an unsupported architecture variant?)";
      parts.push_back(u);
    }
    for (size_t i = 0; i < parts.size(); ++i) msg += (i ? "; " : "") + parts[i];
    throw Error(msg);
  }

  if (options.validate_only) return ck;
  // Materialise: zero-copy views for aligned F32, converted/packed copies otherwise.
  std::vector<const SafetensorsTensorInfo*> converted;
  for (const auto& [name, shape] : expected) {
    const Source& s = sources.at(name);
    Tensor t;
    if (s.parts.size() == 3) {
      t = Tensor::empty(s.shape, DType::F32);
      const int64_t per_part = s.parts[0]->numel();
      for (size_t i = 0; i < 3; ++i) file.copy_f32(*s.parts[i], t.f32() + i * size_t(per_part));
    } else if (s.transposed) {
      Tensor stored = file.to_f32(*s.parts[0]);
      const int64_t rows = stored.shape[0], cols = stored.shape[1];
      t = Tensor::empty({cols, rows}, DType::F32);
      const float* src = stored.f32();
      float* dst = t.f32();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
    } else {
      t = file.to_f32(*s.parts[0]);
    }
    const auto at = reinterpret_cast<uintptr_t>(t.data), map = reinterpret_cast<uintptr_t>(file.mapping()->data());
    if (at < map || at >= map + file.file_size()) converted.insert(converted.end(), s.parts.begin(), s.parts.end());
    t.shape = shape;  // logit_scale stored as [1] becomes []
    ck.tensors.emplace(name, std::move(t));
  }
  // The stored bytes of converted tensors are not needed any more: releasing their pages keeps
  // the resident set near the converted size rather than converted + stored. (After the loop:
  // the kernel maps large folios on a fault, which would bring released pages back.)
  for (const auto* part : converted) file.release_pages(*part);
  return ck;
}

}  // namespace clip
