#pragma once
// The architecture of a CLIP model, as data (open_clip's model-config vocabulary).
// Filled either by inference from an OpenAI-style state dict's shapes (as the reference's
// build_model does), from an open_clip JSON config, or from a Hugging Face config.json.
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
};

}  // namespace clip
