#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/io.h"

namespace clip {
namespace {

using json = nlohmann::json;

// Reads an integer field (absent or null -> fallback); rejects non-integers and absurd values.
int get_int(const json& obj, const char* key, int fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) {
    int64_t v = it->get<int64_t>();
    if (v < 0 || v > (1 << 24)) throw Error(where + "\"" + key + "\" = " + it->dump() + " is out of range");
    return int(v);
  }
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (d == std::floor(d) && d >= 0 && d <= (1 << 24)) return int(d);
  }
  throw Error(where + "\"" + key + "\" = " + it->dump() + " is not a non-negative integer");
}

double get_number(const json& obj, const char* key, double fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw Error(where + "\"" + key + "\" = " + it->dump() + " is not a number");
  return it->get<double>();
}

bool get_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw Error(where + "\"" + key + "\" = " + it->dump() + " is not true/false");
  return it->get<bool>();
}

const json& get_object(const json& obj, const char* key, const std::string& where) {
  static const json empty = json::object();
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return empty;
  if (!it->is_object()) throw Error(where + "\"" + key + "\" is not a JSON object");
  return *it;
}

// A key whose presence with a non-default value selects a feature we do not implement.
void reject_if(bool unsupported, const std::string& where, const std::string& what) {
  if (unsupported) throw Error(where + what + " is not supported by this implementation");
}

bool is_set(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null() && !(it->is_boolean() && !it->get<bool>());
}

int heads_for(int width, int head_width, const std::string& where, const char* what) {
  if (head_width <= 0 || width % head_width != 0)
    throw Error(where + what + " width " + std::to_string(width) + " is not a multiple of head_width " +
                std::to_string(head_width));
  return width / head_width;
}

ModelConfig parse_openclip(const json& cfg, const std::string& where) {
  ModelConfig c;
  if (!cfg.contains("embed_dim")) throw Error(where + "open_clip model config has no \"embed_dim\"");
  c.embed_dim = get_int(cfg, "embed_dim", 512, where);
  // open_clip builds nn.GELU unless quick_gelu is set (OpenAI's weights need QuickGELU).
  c.activation = get_bool(cfg, "quick_gelu", false, where) ? Activation::QuickGELU : Activation::GELU;
  // SigLIP's learned logit bias (its towers must still be ones this project implements).
  if (cfg.contains("init_logit_bias") && !cfg["init_logit_bias"].is_null())
    c.init_logit_bias = float(get_number(cfg, "init_logit_bias", -10.0, where));
  reject_if(is_set(cfg, "custom_text"), where, "\"custom_text\" (text tower under 'text.')");
  reject_if(cfg.contains("multimodal_cfg"), where, "\"multimodal_cfg\" (CoCa)");

  const std::string vw = where + "vision_cfg: ";
  const json& v = get_object(cfg, "vision_cfg", where);
  reject_if(is_set(v, "timm_model_name"), vw, "\"timm_model_name\" (timm vision tower)");
  reject_if(is_set(v, "ls_init_value"), vw, "\"ls_init_value\" (layer scale)");
  reject_if(is_set(v, "attentional_pool"), vw, "\"attentional_pool\"");
  reject_if(is_set(v, "no_ln_pre"), vw, "\"no_ln_pre\"");
  reject_if(is_set(v, "final_ln_after_pool"), vw, "\"final_ln_after_pool\"");
  reject_if(v.contains("pool_type") && v["pool_type"] != "tok", vw, "\"pool_type\" other than \"tok\"");
  reject_if(v.contains("input_patchnorm") && is_set(v, "input_patchnorm"), vw, "\"input_patchnorm\"");
  if (auto it = v.find("image_size"); it != v.end() && it->is_array()) {
    if (it->size() != 2 || (*it)[0] != (*it)[1]) throw Error(vw + "non-square \"image_size\" is not supported");
    c.vision.image_size = get_int(json{{"s", (*it)[0]}}, "s", 224, vw);
  } else {
    c.vision.image_size = get_int(v, "image_size", 224, vw);
  }
  int head_width = get_int(v, "head_width", 64, vw);
  double mlp_ratio = get_number(v, "mlp_ratio", 4.0, vw);
  if (auto it = v.find("layers"); it != v.end() && it->is_array()) {
    if (it->size() != 4) throw Error(vw + "ResNet \"layers\" must list 4 stage depths");
    for (const auto& d : *it) c.vision.resnet_layers.push_back(get_int(json{{"d", d}}, "d", 0, vw));
    c.vision.width = get_int(v, "width", 64, vw);
    c.vision.heads = heads_for(c.vision.width * 32, head_width, vw, "ResNet attention-pool");
    c.vision.layers = 0;
    c.vision.patch_size = 0;
    c.vision.mlp_dim = 0;
  } else {
    c.vision.layers = get_int(v, "layers", 12, vw);
    c.vision.width = get_int(v, "width", 768, vw);
    c.vision.patch_size = get_int(v, "patch_size", 16, vw);
    c.vision.heads = heads_for(c.vision.width, head_width, vw, "vision");
    c.vision.mlp_dim = int(c.vision.width * mlp_ratio);
  }

  const std::string tw = where + "text_cfg: ";
  const json& t = get_object(cfg, "text_cfg", where);
  reject_if(is_set(t, "hf_model_name"), tw, "\"hf_model_name\" (Hugging Face text tower)");
  reject_if(is_set(t, "ls_init_value"), tw, "\"ls_init_value\" (layer scale)");
  reject_if(is_set(t, "embed_cls"), tw, "\"embed_cls\"");
  reject_if(is_set(t, "no_causal_mask"), tw, "\"no_causal_mask\"");
  reject_if(is_set(t, "proj_bias"), tw, "\"proj_bias\"");
  reject_if(t.contains("pool_type") && t["pool_type"] != "argmax", tw, "\"pool_type\" other than \"argmax\"");
  reject_if(t.contains("proj_type") && t["proj_type"] != "linear", tw, "\"proj_type\" other than \"linear\"");
  c.text.context_length = get_int(t, "context_length", 77, tw);
  c.text.vocab_size = get_int(t, "vocab_size", 49408, tw);
  c.text.width = get_int(t, "width", 512, tw);
  c.text.heads = get_int(t, "heads", 8, tw);
  c.text.layers = get_int(t, "layers", 12, tw);
  c.text.mlp_dim = int(c.text.width * get_number(t, "mlp_ratio", 4.0, tw));
  c.layer_norm_eps = 1e-5f;
  return c;
}

Activation parse_hf_act(const json& obj, const std::string& where) {
  auto it = obj.find("hidden_act");
  if (it == obj.end() || it->is_null()) return Activation::QuickGELU;  // transformers' default
  if (*it == "quick_gelu") return Activation::QuickGELU;
  if (*it == "gelu") return Activation::GELU;
  throw Error(where + "\"hidden_act\" = " + it->dump() + " is not supported (expected \"quick_gelu\" or \"gelu\")");
}

ModelConfig parse_hf(const json& cfg, const std::string& where) {
  if (auto it = cfg.find("model_type"); it != cfg.end() && *it != "clip")
    throw Error(where + "\"model_type\" = " + it->dump() + " is not a CLIP model (expected \"clip\")");
  ModelConfig c;
  c.embed_dim = get_int(cfg, "projection_dim", 512, where);
  // Old transformers configs carry the sub-configs as *_config_dict; the current ones as *_config.
  const json& t0 = get_object(cfg, "text_config", where);
  const json& t = t0.empty() ? get_object(cfg, "text_config_dict", where) : t0;
  const json& v0 = get_object(cfg, "vision_config", where);
  const json& v = v0.empty() ? get_object(cfg, "vision_config_dict", where) : v0;
  const std::string tw = where + "text_config: ", vw = where + "vision_config: ";

  c.text.width = get_int(t, "hidden_size", 512, tw);
  c.text.mlp_dim = get_int(t, "intermediate_size", 2048, tw);
  c.text.heads = get_int(t, "num_attention_heads", 8, tw);
  c.text.layers = get_int(t, "num_hidden_layers", 12, tw);
  c.text.context_length = get_int(t, "max_position_embeddings", 77, tw);
  c.text.vocab_size = get_int(t, "vocab_size", 49408, tw);

  c.vision.width = get_int(v, "hidden_size", 768, vw);
  c.vision.mlp_dim = get_int(v, "intermediate_size", 3072, vw);
  c.vision.heads = get_int(v, "num_attention_heads", 12, vw);
  c.vision.layers = get_int(v, "num_hidden_layers", 12, vw);
  c.vision.image_size = get_int(v, "image_size", 224, vw);
  c.vision.patch_size = get_int(v, "patch_size", 32, vw);
  if (get_int(v, "num_channels", 3, vw) != 3) throw Error(vw + "\"num_channels\" other than 3 is not supported");

  Activation ta = parse_hf_act(t, tw), va = parse_hf_act(v, vw);
  if (ta != va) throw Error(where + "text and vision towers use different \"hidden_act\"; not supported");
  c.activation = ta;
  double te = get_number(t, "layer_norm_eps", 1e-5, tw), ve = get_number(v, "layer_norm_eps", 1e-5, vw);
  if (te != ve) throw Error(where + "text and vision towers use different \"layer_norm_eps\"; not supported");
  c.layer_norm_eps = float(te);
  return c;
}

}  // namespace

void validate_model_config(const ModelConfig& c, const std::string& source) {
  const std::string where = source + ": model config: ";
  auto positive = [&](int v, const char* what) {
    if (v <= 0) throw Error(where + what + " = " + std::to_string(v) + " must be positive");
    if (v > (1 << 20)) throw Error(where + what + " = " + std::to_string(v) + " is implausibly large");
  };
  positive(c.embed_dim, "embed_dim");
  positive(c.text.context_length, "text context_length");
  positive(c.text.vocab_size, "text vocab_size");
  positive(c.text.width, "text width");
  positive(c.text.heads, "text heads");
  positive(c.text.layers, "text layers");
  positive(c.text.mlp_dim, "text mlp_dim");
  if (c.text.layers > 1024) throw Error(where + "text layers = " + std::to_string(c.text.layers) + " is implausibly large");
  if (c.text.width % c.text.heads)
    throw Error(where + "text width " + std::to_string(c.text.width) + " is not divisible by heads " +
                std::to_string(c.text.heads));
  positive(c.vision.image_size, "vision image_size");
  positive(c.vision.width, "vision width");
  positive(c.vision.heads, "vision heads");
  if (c.vision.is_resnet()) {
    for (int d : c.vision.resnet_layers) positive(d, "ResNet stage depth");
    if (c.vision.resnet_layers.size() != 4) throw Error(where + "ResNet needs 4 stage depths");
    if (c.vision.image_size % 32)
      throw Error(where + "ResNet image_size " + std::to_string(c.vision.image_size) + " is not a multiple of 32");
    if ((c.vision.width * 32) % c.vision.heads)
      throw Error(where + "ResNet attention-pool width " + std::to_string(c.vision.width * 32) +
                  " is not divisible by heads " + std::to_string(c.vision.heads));
  } else {
    positive(c.vision.layers, "vision layers");
    positive(c.vision.patch_size, "vision patch_size");
    positive(c.vision.mlp_dim, "vision mlp_dim");
    if (c.vision.layers > 1024) throw Error(where + "vision layers = " + std::to_string(c.vision.layers) + " is implausibly large");
    if (c.vision.image_size % c.vision.patch_size)
      throw Error(where + "image_size " + std::to_string(c.vision.image_size) + " is not a multiple of patch_size " +
                  std::to_string(c.vision.patch_size));
    if (c.vision.width % c.vision.heads)
      throw Error(where + "vision width " + std::to_string(c.vision.width) + " is not divisible by heads " +
                  std::to_string(c.vision.heads));
  }
  if (!(c.layer_norm_eps > 0 && c.layer_norm_eps < 1))
    throw Error(where + "layer_norm_eps must be in (0, 1)");
}

namespace {
// The config without its name (the named configs are parsed with this).
ModelConfig parse_unnamed(const std::string& text, const std::string& source, ConfigFormat* format) {
  const std::string where = source + ": ";
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(where + "not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw Error(where + "model config is not a JSON object");
  ModelConfig c;
  ConfigFormat f;
  try {
    if (root.contains("text_config") || root.contains("vision_config") || root.contains("text_config_dict") ||
        root.contains("projection_dim")) {
      f = ConfigFormat::HuggingFace;
      c = parse_hf(root, where);
    } else if (root.contains("model_cfg")) {
      f = ConfigFormat::OpenCLIP;
      if (!root["model_cfg"].is_object()) throw Error(where + "\"model_cfg\" is not a JSON object");
      c = parse_openclip(root["model_cfg"], where + "model_cfg: ");
    } else if (root.contains("embed_dim")) {
      f = ConfigFormat::OpenCLIP;
      c = parse_openclip(root, where);
    } else {
      throw Error(where + "not a CLIP model config (expected open_clip's \"embed_dim\"/\"model_cfg\" or "
                          "Hugging Face's \"text_config\"/\"vision_config\")");
    }
  } catch (const json::exception& e) {
    throw Error(where + "unexpected value in model config: " + e.what());
  }
  validate_model_config(c, source);
  if (format) *format = f;
  return c;
}
}  // namespace

ModelConfig parse_model_config_json(const std::string& text, const std::string& source, ConfigFormat* format) {
  ModelConfig c = parse_unnamed(text, source, format);
  c.name = known_model_name(c);
  return c;
}

ModelConfig load_model_config(const std::string& path, ConfigFormat* format) {
  return parse_model_config_json(read_text_file(path), path, format);
}

std::string model_config_to_openclip_json(const ModelConfig& c) {
  json j;
  j["embed_dim"] = c.embed_dim;
  if (c.activation == Activation::QuickGELU) j["quick_gelu"] = true;
  if (c.init_logit_bias) j["init_logit_bias"] = *c.init_logit_bias;
  json v;
  v["image_size"] = c.vision.image_size;
  if (c.vision.is_resnet()) {
    v["layers"] = c.vision.resnet_layers;
    v["width"] = c.vision.width;
    v["head_width"] = c.vision.width * 32 / c.vision.heads;
  } else {
    v["layers"] = c.vision.layers;
    v["width"] = c.vision.width;
    v["patch_size"] = c.vision.patch_size;
    v["head_width"] = c.vision.width / c.vision.heads;
    v["mlp_ratio"] = double(c.vision.mlp_dim) / c.vision.width;
  }
  j["vision_cfg"] = v;
  json t;
  t["context_length"] = c.text.context_length;
  t["vocab_size"] = c.text.vocab_size;
  t["width"] = c.text.width;
  t["heads"] = c.text.heads;
  t["layers"] = c.text.layers;
  t["mlp_ratio"] = double(c.text.mlp_dim) / c.text.width;
  j["text_cfg"] = t;
  return j.dump(2) + "\n";
}

std::string model_config_to_hf_json(const ModelConfig& c) {
  if (c.vision.is_resnet()) throw Error("Hugging Face CLIPModel has no ResNet vision tower");
  if (c.init_logit_bias) throw Error("Hugging Face CLIPModel has no logit_bias (a SigLIP model): use open_clip's layout");
  const char* act = c.activation == Activation::QuickGELU ? "quick_gelu" : "gelu";
  json j;
  j["architectures"] = {"CLIPModel"};
  j["model_type"] = "clip";
  j["projection_dim"] = c.embed_dim;
  j["logit_scale_init_value"] = 2.6592;
  j["text_config"] = {{"hidden_size", c.text.width},
                      {"intermediate_size", c.text.mlp_dim},
                      {"num_attention_heads", c.text.heads},
                      {"num_hidden_layers", c.text.layers},
                      {"max_position_embeddings", c.text.context_length},
                      {"vocab_size", c.text.vocab_size},
                      {"hidden_act", act},
                      {"layer_norm_eps", c.layer_norm_eps},
                      {"projection_dim", c.embed_dim},
                      {"model_type", "clip_text_model"}};
  j["vision_config"] = {{"hidden_size", c.vision.width},
                        {"intermediate_size", c.vision.mlp_dim},
                        {"num_attention_heads", c.vision.heads},
                        {"num_hidden_layers", c.vision.layers},
                        {"image_size", c.vision.image_size},
                        {"patch_size", c.vision.patch_size},
                        {"num_channels", 3},
                        {"hidden_act", act},
                        {"layer_norm_eps", c.layer_norm_eps},
                        {"projection_dim", c.embed_dim},
                        {"model_type", "clip_vision_model"}};
  return j.dump(2) + "\n";
}

namespace {

struct NamedConfig {
  const char* name;
  const char* json;
};
constexpr NamedConfig kNamedConfigs[] = {
#include "model_configs.inc"
};

// Every named config, parsed once.
const std::vector<ModelConfig>& named_configs() {
  static const std::vector<ModelConfig> all = [] {
    std::vector<ModelConfig> v;
    for (const NamedConfig& n : kNamedConfigs) {
      ModelConfig c = parse_unnamed(n.json, std::string("model_configs/") + n.name + ".json", nullptr);
      c.name = n.name;
      v.push_back(std::move(c));
    }
    return v;
  }();
  return all;
}

bool same_architecture(const ModelConfig& a, const ModelConfig& b) {
  const auto& v = a.vision;
  const auto& w = b.vision;
  const auto& t = a.text;
  const auto& u = b.text;
  return a.embed_dim == b.embed_dim && v.image_size == w.image_size && v.width == w.width && v.heads == w.heads &&
         v.resnet_layers == w.resnet_layers &&
         (v.is_resnet() || (v.patch_size == w.patch_size && v.layers == w.layers && v.mlp_dim == w.mlp_dim)) &&
         t.context_length == u.context_length && t.vocab_size == u.vocab_size && t.width == u.width &&
         t.heads == u.heads && t.layers == u.layers && t.mlp_dim == u.mlp_dim;
}

}  // namespace

std::vector<std::string> model_config_names() {
  std::vector<std::string> names;
  for (const NamedConfig& n : kNamedConfigs) names.push_back(n.name);
  return names;
}

ModelConfig named_model_config(const std::string& name) {
  std::string known;
  for (const ModelConfig& c : named_configs()) {
    if (c.name == name) return c;
    known += (known.empty() ? "" : ", ") + c.name;
  }
  throw Error("'" + name + "' is neither a file nor a known architecture (" + known + ")");
}

ModelConfig resolve_model_config(const std::string& spec) {
  std::error_code ec;
  ModelConfig c = std::filesystem::is_regular_file(spec, ec) ? load_model_config(spec) : named_model_config(spec);
  validate_model_config(c, spec);
  return c;
}

std::string known_model_name(const ModelConfig& c) {
  for (const ModelConfig& k : named_configs())
    if (same_architecture(c, k)) return k.name;
  return "";
}

std::string describe_model_config(const ModelConfig& c) {
  std::ostringstream os;
  if (!c.name.empty()) os << c.name << ": ";
  if (c.vision.is_resnet()) {
    os << "ResNet image " << c.vision.image_size << " layers (";
    for (size_t i = 0; i < c.vision.resnet_layers.size(); ++i) os << (i ? "," : "") << c.vision.resnet_layers[i];
    os << ") width " << c.vision.width << " attnpool heads " << c.vision.heads;
  } else {
    os << "ViT image " << c.vision.image_size << " patch " << c.vision.patch_size << " width " << c.vision.width
       << " layers " << c.vision.layers << " heads " << c.vision.heads << " mlp " << c.vision.mlp_dim;
  }
  os << "; text context " << c.text.context_length << " vocab " << c.text.vocab_size << " width " << c.text.width
     << " layers " << c.text.layers << " heads " << c.text.heads << " mlp " << c.text.mlp_dim << "; embed "
     << c.embed_dim << "; " << (c.activation == Activation::QuickGELU ? "QuickGELU" : "GELU");
  return os.str();
}

}  // namespace clip
