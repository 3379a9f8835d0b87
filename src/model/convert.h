#pragma once
// `clip convert`: a model from any format clip reads (safetensors in any naming scheme, a model
// folder, PyTorch .pt/.bin, TorchScript, GGUF) to
//   * OUT.gguf: clip.cpp's layout (model/gguf_clip.h), 2-D weights as `type` (f32, f16, q8_0,
//     q4_0), the token list of the model's tokenizer (its folder's, else OpenAI's);
//   * OUT.safetensors: OpenAI's names, `type` f32, f16 or bf16.
#include <string>

namespace clip {

struct ConvertReport {
  std::string format;  // "gguf" or "safetensors"
  std::string type;
  int64_t tensors = 0;
  uint64_t bytes = 0;  // of the written file
};

ConvertReport convert_model(const std::string& input, const std::string& output, const std::string& type);

}  // namespace clip
