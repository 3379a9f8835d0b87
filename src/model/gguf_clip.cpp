#include "model/gguf_clip.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "model/checkpoint_writer.h"
#include "model/weights.h"

namespace clip {

std::string clip_gguf_tensor_name(const std::string& hf_name) {
  if (hf_name.find("projection") != std::string::npos) return hf_name;
  static const std::pair<const char*, const char*> steps[] = {
      {"text_model", "t"},     {"vision_model", "v"}, {"encoder.layers", "blk"}, {"embeddings.", ""},
      {"_proj", ""},           {"self_attn.", "attn_"}, {"layer_norm", "ln"},     {"layernorm", "ln"},
      {"mlp.fc1", "ffn_down"}, {"mlp.fc2", "ffn_up"},  {"embedding", "embd"},    {"final", "post"},
      {"layrnorm", "ln"}};
  std::string s = hf_name;
  for (const auto& [from, to] : steps) {
    const std::string f(from), t(to);
    for (size_t at = s.find(f); at != std::string::npos; at = s.find(f, at + t.size())) s.replace(at, f.size(), t);
  }
  return s;
}

namespace {
const GgufTensorInfo* find_tensor(const GgufFile& f, const std::string& name) {
  for (const auto& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}
}  // namespace

ModelConfig clip_gguf_config(const GgufFile& f) {
  const GgufValue* arch = f.find("general.architecture");
  if (!arch || arch->kind != GgufValue::String || arch->s != "clip")
    throw Error(f.path() + ": not a CLIP GGUF (general.architecture is not \"clip\"; llama.cpp's multimodal "
                           "projector files are a different layout)");
  if (!f.get_bool("clip.has_text_encoder", false) || !f.get_bool("clip.has_vision_encoder", false))
    throw Error(f.path() + ": a one-tower CLIP GGUF (text-only or vision-only); clip needs both towers");
  ModelConfig c;
  auto tower = [&](const std::string& p, auto& t) {  // the keys both towers have
    t.width = int(f.get_uint(p + "embedding_length"));
    t.mlp_dim = int(f.get_uint(p + "feed_forward_length"));
    t.heads = int(f.get_uint(p + "attention.head_count"));
    t.layers = int(f.get_uint(p + "block_count"));
  };
  tower("clip.text.", c.text);
  tower("clip.vision.", c.vision);
  c.text.context_length = int(f.get_uint("clip.text.context_length"));
  c.vision.image_size = int(f.get_uint("clip.vision.image_size"));
  c.vision.patch_size = int(f.get_uint("clip.vision.patch_size"));
  c.embed_dim = int(f.get_uint("clip.vision.projection_dim"));
  if (int(f.get_uint("clip.text.projection_dim")) != c.embed_dim)
    throw Error(f.path() + ": text and vision projection dimensions differ");
  c.layer_norm_eps = float(f.get_float("clip.text.attention.layer_norm_epsilon"));
  c.activation = f.get_bool("clip.use_gelu", false) ? Activation::GELU : Activation::QuickGELU;
  const GgufTensorInfo* tok = find_tensor(f, "t.token_embd.weight");
  if (!tok || tok->shape.size() != 2) throw Error(f.path() + ": missing tensor t.token_embd.weight");
  c.text.vocab_size = int(tok->shape[0]);
  validate_model_config(c, f.path());
  c.name = known_model_name(c);
  return c;
}

namespace {
// The image's tensors (see clip_gguf_safetensors_image); those whose HF names are in `zeros`
// are F32 zeros of their shape (views of one untouched anonymous mapping: no memory).
NamedTensors hf_tensors(const GgufFile& f, const ModelConfig& config, const std::set<std::string>& zeros) {
  std::map<std::string, std::string> hf_of;  // GGUF name -> HF name
  for (const auto& [canonical, shape] : expected_tensors(config)) {
    if (canonical == "logit_scale") continue;
    for (const std::string& hf : hf_mapping_for(canonical).names) hf_of[clip_gguf_tensor_name(hf)] = hf;
  }
  std::shared_ptr<void> zero_pages;
  size_t zero_bytes = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    auto it = hf_of.find(t.name);
    if (it != hf_of.end() && zeros.count(it->second)) zero_bytes = std::max(zero_bytes, size_t(t.numel()) * sizeof(float));
  }
  if (zero_bytes > 0) {
    void* p = ::mmap(nullptr, zero_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw Error(f.path() + ": out of address space for " + std::to_string(zero_bytes) + " bytes");
    zero_pages = std::shared_ptr<void>(p, [zero_bytes](void* q) { ::munmap(q, zero_bytes); });
  }
  NamedTensors out;
  for (const GgufTensorInfo& t : f.tensors()) {
    auto it = hf_of.find(t.name);
    if (it == hf_of.end()) throw Error(f.path() + ": unexpected tensor " + t.name + " (not part of a CLIP ViT)");
    if (zeros.count(it->second))
      out.emplace_back(it->second, Tensor::view(zero_pages.get(), t.shape, DType::F32, zero_pages));
    else
      out.emplace_back(it->second, f.to_stored(t));
  }
  Tensor scale = Tensor::empty({}, DType::F32);
  scale.f32()[0] = std::log(100.f);
  out.emplace_back("logit_scale", scale);
  return out;
}
}  // namespace

std::vector<uint8_t> clip_gguf_safetensors_image(const GgufFile& f, const ModelConfig& config,
                                                 const std::map<std::string, LoadedCheckpoint::BlockRows>* blocks) {
  std::set<std::string> zeros;  // HF names of the block-stored weights' parts
  if (blocks)
    for (const auto& [canonical, b] : *blocks)
      for (const std::string& hf : hf_mapping_for(canonical).names) zeros.insert(hf);
  return serialize_safetensors(hf_tensors(f, config, zeros), {}, zeros);
}

std::map<std::string, LoadedCheckpoint::BlockRows> clip_gguf_block_weights(const GgufFile& f, const ModelConfig& config) {
  std::map<std::string, const GgufTensorInfo*> by_name;
  for (const GgufTensorInfo& t : f.tensors()) by_name[t.name] = &t;
  std::map<std::string, LoadedCheckpoint::BlockRows> out;
  for (const auto& [canonical, shape] : expected_tensors(config)) {
    if (shape.size() != 2 || canonical.find("resblocks.") == std::string::npos) continue;
    const HfTensorMapping m = hf_mapping_for(canonical);
    if (m.transposed) continue;
    std::vector<const GgufTensorInfo*> parts;
    for (const std::string& hf : m.names) {
      auto it = by_name.find(clip_gguf_tensor_name(hf));
      if (it != by_name.end()) parts.push_back(it->second);
    }
    if (parts.size() != m.names.size() || parts.empty()) continue;
    const GgmlType type = parts[0]->type;
    // q4_0 and q8_0 as stored; q4_1, q5_0, q5_1 (block formats the kernels do not take)
    // re-quantized once to q8_0 (8-bit steps of each block's range: far finer than theirs).
    const bool as_stored = type == GgmlType::Q4_0 || type == GgmlType::Q8_0;
    if (!as_stored && type != GgmlType::Q4_1 && type != GgmlType::Q5_0 && type != GgmlType::Q5_1) continue;
    LoadedCheckpoint::BlockRows b;
    b.format = type == GgmlType::Q4_0 ? BlockFormat::Q4_0 : BlockFormat::Q8_0;
    b.cols = shape[1];
    bool alike = true;
    for (const GgufTensorInfo* p : parts)
      alike = alike && p->type == type && p->shape.size() == 2 && p->shape[1] == b.cols && b.cols % 32 == 0;
    if (!alike) continue;  // mixed parts: dequantized like the other types
    for (const GgufTensorInfo* p : parts) {
      b.rows += p->shape[0];
      const uint8_t* data = f.tensor_data(*p);
      if (as_stored) {
        b.bytes.insert(b.bytes.end(), data, data + p->nbytes);
      } else {
        const Tensor values = f.to_f32(*p);
        const size_t at = b.bytes.size();
        b.bytes.resize(at + size_t(values.numel() / 32 * 34));
        quantize_q8_0(values.f32(), values.numel(), b.bytes.data() + at);
      }
    }
    if (b.rows != shape[0]) continue;  // a shape problem: the loader reports it
    out.emplace(canonical, std::move(b));
  }
  return out;
}

void write_clip_gguf(const std::string& path, const std::map<std::string, Tensor>& canonical, const ModelConfig& c,
                     const std::vector<std::string>& tokens, GgmlType weight_type, const std::vector<float>& mean,
                     const std::vector<float>& stddev, const std::string& name) {
  if (c.vision.is_resnet()) throw Error(path + ": clip.cpp's GGUF holds ViT towers only; this model has a ResNet");
  const NamedTensors hf = tensors_for_scheme(canonical, c, NamingScheme::HuggingFace);
  GgufWriter w;
  w.add_string("general.architecture", "clip");
  w.add_bool("clip.has_text_encoder", true);
  w.add_bool("clip.has_vision_encoder", true);
  w.add_uint32("general.file_type", weight_type == GgmlType::F32 ? 0 : 1);
  w.add_string("general.name", name);
  w.add_string("general.description", "two-tower CLIP model");
  // The keys both towers have, in the converter's order.
  auto tower = [&](const std::string& p, int width, int mlp_dim, int heads, int layers) {
    w.add_uint32(p + "embedding_length", uint32_t(width));
    w.add_uint32(p + "feed_forward_length", uint32_t(mlp_dim));
    w.add_uint32(p + "projection_dim", uint32_t(c.embed_dim));
    w.add_uint32(p + "attention.head_count", uint32_t(heads));
    w.add_float32(p + "attention.layer_norm_epsilon", c.layer_norm_eps);
    w.add_uint32(p + "block_count", uint32_t(layers));
  };
  w.add_uint32("clip.text.context_length", uint32_t(c.text.context_length));
  tower("clip.text.", c.text.width, c.text.mlp_dim, c.text.heads, c.text.layers);
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_uint32("clip.vision.image_size", uint32_t(c.vision.image_size));
  w.add_uint32("clip.vision.patch_size", uint32_t(c.vision.patch_size));
  tower("clip.vision.", c.vision.width, c.vision.mlp_dim, c.vision.heads, c.vision.layers);
  w.add_floats("clip.vision.image_mean", mean);
  w.add_floats("clip.vision.image_std", stddev);
  w.add_bool("clip.use_gelu", c.activation == Activation::GELU);
  for (const auto& [hf_name, t] : hf) {
    if (hf_name == "logit_scale" || hf_name.find("position_ids") != std::string::npos) continue;
    const std::string n = clip_gguf_tensor_name(hf_name);
    GgmlType type = GgmlType::F32;
    const bool weight2d = t.dim() == 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
    if (t.dim() == 4) type = GgmlType::F16;
    else if (weight2d) type = weight_type;
    // q4_0: only the image tower's blocks in 4 bits, every other 2-D weight (text blocks,
    // embeddings, projections) in q8_0, as --precision int4 runs them: on the seeded ViT-B/32,
    // all in q4_0 gave features at cosine 0.954 to f32, q8_0 text blocks 0.990, this 0.997.
    if (type == GgmlType::Q4_0 && n.rfind("v.blk.", 0) != 0) type = GgmlType::Q8_0;
    w.add_tensor(n, t, type);
  }
  w.write(path);
}

}  // namespace clip
