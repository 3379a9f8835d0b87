#pragma once
// The architecture of a CLIP model, as data (open_clip's model-config vocabulary).
// Filled either by inference from an OpenAI-style state dict's shapes (as the reference's
// build_model does), from an open_clip JSON config, or from a Hugging Face config.json.
#include <optional>
#include <string>
#include <vector>

namespace clip {

enum class Activation { QuickGELU, GELU };  // QuickGELU: x * sigmoid(1.702 x) (OpenAI weights)

struct VisionConfig {
  // ViT when resnet_layers is empty; ModifiedResNet otherwise.
  int image_size = 224;
  int patch_size = 32;      // ViT only
  int width = 768;          // ViT: transformer width; ResNet: stem width (64 for RN50)
  int layers = 12;          // ViT: number of residual attention blocks
  int heads = 12;           // ViT: width / 64; ResNet attention pool: width * 32 / 64
  int mlp_dim = 3072;       // ViT: 4 * width
  std::vector<int> resnet_layers;  // e.g. {3, 4, 6, 3} for RN50
  bool is_resnet() const { return !resnet_layers.empty(); }
};

struct TextConfig {
  int context_length = 77;
  int vocab_size = 49408;
  int width = 512;
  int heads = 8;
  int layers = 12;
  int mlp_dim = 2048;
};

struct ModelConfig {
  int embed_dim = 512;
  VisionConfig vision;
  TextConfig text;
  Activation activation = Activation::QuickGELU;
  float layer_norm_eps = 1e-5f;
  std::string name;  // e.g. "ViT-B-32" when known; informational
  // SigLIP (open_clip's "init_logit_bias"): the model has a learned "logit_bias" beside
  // logit_scale and trains with the pairwise sigmoid loss; the value is the bias's initial one.
  std::optional<float> init_logit_bias;
};

}  // namespace clip

// ---- JSON configs (src/model/config.cpp) ----
namespace clip {

enum class ConfigFormat { OpenCLIP, HuggingFace };

// Parses a model config in any of the accepted formats, detected from its keys:
//   * open_clip's model config: {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
//   * the same wrapped as open_clip_config.json: {"model_cfg": {...}, "preprocess_cfg": {...}}
//   * Hugging Face CLIPModel config.json: {"projection_dim", "text_config", "vision_config"}
// Missing fields take the defaults of the format's own reference (open_clip's CLIPVisionCfg /
// CLIPTextCfg, transformers' CLIPTextConfig / CLIPVisionConfig). Features this project does
// not implement (layer scale, attentional pooling, HF/timm towers, ...) are a clip::Error
// naming the key. `source` (a path) starts every error message.
ModelConfig parse_model_config_json(const std::string& json_text, const std::string& source,
                                    ConfigFormat* format = nullptr);
ModelConfig load_model_config(const std::string& path, ConfigFormat* format = nullptr);

// Checks that the dimensions are positive, consistent (width divisible by heads, image size
// divisible by the patch / by 32 for ResNets) and of sane size; throws naming `source`.
void validate_model_config(const ModelConfig& config, const std::string& source);

// The config in open_clip's model-config format (plain, not wrapped), and as a Hugging Face
// CLIPModel config.json (ViT only). Pretty-printed JSON text.
std::string model_config_to_openclip_json(const ModelConfig& config);
std::string model_config_to_hf_json(const ModelConfig& config);

// Named architectures: the open_clip model configs in src/model/model_configs/NAME.json (the
// nine OpenAI releases ViT-B-32 ... RN50x64 with QuickGELU, and the recipes' cifar10-vit-tiny,
// cifar10-rn-tiny and cifar10-rn-small), compiled into the library and installed to share/clip/model_configs/.
std::vector<std::string> model_config_names();
// The named config; throws clip::Error listing the names for an unknown one.
ModelConfig named_model_config(const std::string& name);
// A file (any format above) or a name, validated; errors name `spec`.
ModelConfig resolve_model_config(const std::string& spec);

// The name of the named architecture with these dimensions ("ViT-B-32", "RN50", ...; the
// activation is not compared: open_clip and Hugging Face files differ there), or "".
std::string known_model_name(const ModelConfig& config);
// One line: "ViT-B-32: ViT image 224 patch 32 width 768 layers 12 heads 12 mlp 3072; text ..."
std::string describe_model_config(const ModelConfig& config);

}  // namespace clip
