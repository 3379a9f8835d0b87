#include "model/checkpoint_writer.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <cstring>

#include "core/error.h"
#include "core/io.h"

namespace clip {
namespace {

Tensor convert(const Tensor& f32, DType dtype) {
  if (dtype == DType::F32) return f32;  // shares storage; the writer only reads it
  Tensor out = Tensor::empty(f32.shape, dtype);
  const float* s = f32.f32();
  auto* d = out.ptr<uint16_t>();
  const int64_t n = f32.numel();
  if (dtype == DType::F16) for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
  else if (dtype == DType::BF16) for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
  else throw Error(std::string("checkpoint writer: cannot store weights as ") + dtype_name(dtype));
  return out;
}

Tensor transpose2d(const Tensor& t) {
  const int64_t rows = t.shape[0], cols = t.shape[1];
  Tensor out = Tensor::empty({cols, rows}, DType::F32);
  const float* s = t.f32();
  float* d = out.f32();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) d[c * rows + r] = s[r * cols + c];
  return out;
}

}  // namespace

NamedTensors tensors_for_scheme(const std::map<std::string, Tensor>& canonical, const ModelConfig& config,
                                NamingScheme scheme, DType dtype) {
  if (scheme == NamingScheme::HuggingFace && config.vision.is_resnet())
    throw Error("checkpoint writer: Hugging Face CLIPModel has no ResNet vision tower");
  NamedTensors out;
  for (const auto& [name, shape] : expected_tensors(config)) {
    auto it = canonical.find(name);
    if (it == canonical.end()) throw Error("checkpoint writer: missing tensor '" + name + "'");
    const Tensor& t = it->second;
    if (t.shape != shape)
      throw Error("checkpoint writer: tensor '" + name + "' has shape " + t.shape_str() + ", expected " +
                  Tensor::view(nullptr, shape, DType::F32).shape_str());
    t.check_dtype(DType::F32);
    if (scheme != NamingScheme::HuggingFace) {
      out.emplace_back(name, convert(t, dtype));
      continue;
    }
    HfTensorMapping m = hf_mapping_for(name);
    if (m.names.size() == 3) {
      // in_proj [3d, ...] rows q; k; v -> three tensors [d, ...].
      std::vector<int64_t> part_shape = shape;
      part_shape[0] /= 3;
      const int64_t per = t.numel() / 3;
      for (size_t i = 0; i < 3; ++i) {
        Tensor part = Tensor::empty(part_shape, DType::F32);
        std::memcpy(part.data, t.f32() + i * size_t(per), size_t(per) * sizeof(float));
        out.emplace_back(m.names[i], convert(part, dtype));
      }
    } else if (m.transposed) {
      out.emplace_back(m.names[0], convert(transpose2d(t), dtype));
    } else {
      out.emplace_back(m.names[0], convert(t, dtype));
    }
  }
  if (scheme == NamingScheme::HuggingFace) {
    Tensor ids = Tensor::empty({1, config.text.context_length}, DType::I64);
    for (int64_t i = 0; i < config.text.context_length; ++i) ids.ptr<int64_t>()[i] = i;
    out.emplace_back("text_model.embeddings.position_ids", ids);
  }
  return out;
}

void write_checkpoint(const std::string& path, const std::map<std::string, Tensor>& canonical,
                      const ModelConfig& config, NamingScheme scheme, DType dtype) {
  NamedTensors tensors;
  try {
    tensors = tensors_for_scheme(canonical, config, scheme, dtype);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  write_safetensors(path, tensors, {{"format", "pt"}});
}

void write_model_directory(const std::string& dir, const std::map<std::string, Tensor>& canonical,
                           const ModelConfig& config, NamingScheme scheme, DType dtype) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create directory: " + ec.message());
  const fs::path d(dir);
  switch (scheme) {
    case NamingScheme::HuggingFace:
      write_checkpoint((d / "model.safetensors").string(), canonical, config, scheme, dtype);
      write_file_atomic((d / "config.json").string(), model_config_to_hf_json(config));
      break;
    case NamingScheme::OpenCLIP:
      write_checkpoint((d / "open_clip_model.safetensors").string(), canonical, config, scheme, dtype);
      write_file_atomic((d / "open_clip_config.json").string(),
                        "{\"model_cfg\": " + model_config_to_openclip_json(config) + "}\n");
      break;
    case NamingScheme::OpenAI:
      write_checkpoint((d / "model.safetensors").string(), canonical, config, scheme, dtype);
      break;
  }
}

std::map<std::string, Tensor> random_canonical_tensors(const ModelConfig& config, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::map<std::string, Tensor> out;
  auto ends_with = [](const std::string& s, const char* suffix) {
    size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
  };
  for (const auto& [name, shape] : expected_tensors(config)) {
    Tensor t = Tensor::empty(shape, DType::F32);
    float* p = t.f32();
    const int64_t n = t.numel();
    const bool norm_scale = (name.find("ln_") != std::string::npos || name.find(".bn") != std::string::npos ||
                             name.find("downsample.1") != std::string::npos) && ends_with(name, ".weight");
    if (name == "logit_scale") {
      p[0] = std::log(1.f / 0.07f);
    } else if (ends_with(name, "running_var")) {
      for (int64_t i = 0; i < n; ++i) p[i] = 1.f + 0.1f * std::fabs(normal(rng));
    } else if (norm_scale) {
      for (int64_t i = 0; i < n; ++i) p[i] = 1.f + 0.1f * normal(rng);
    } else {
      for (int64_t i = 0; i < n; ++i) p[i] = scale * normal(rng);
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace clip
