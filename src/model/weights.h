#pragma once
// Loading a checkpoint in any supported naming scheme into ONE canonical form, so the
// encoders have a single code path:
//   * names:   OpenAI's state-dict names ("visual.conv1.weight",
//              "transformer.resblocks.3.attn.in_proj_weight", "ln_final.bias", ...)
//   * layouts: OpenAI's/PyTorch's (Linear weight [out, in]; packed in_proj [3d, d] rows q;k;v;
//              "visual.proj" [width, embed] used as x @ proj; "text_projection" [width, embed])
//   * dtype:   F32 (f16/bf16/f64 converted at load; f32 tensors are zero-copy mmap views)
// Hugging Face CLIPModel files are mapped onto these names (q/k/v concatenated into in_proj,
// projections transposed back). Int tensors such as num_batches_tracked are ignored.
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "model/config.h"

namespace clip {

enum class NamingScheme { OpenAI, OpenCLIP, HuggingFace };

struct LoadedCheckpoint {
  ModelConfig config;
  std::map<std::string, Tensor> tensors;  // canonical names -> F32 tensors
  NamingScheme scheme = NamingScheme::OpenAI;
  DType stored_dtype = DType::F32;         // dtype of most floating tensors in the file
  std::string weights_path;                // the .safetensors file actually read
  std::string model_dir;                   // directory holding config/tokenizer files, or ""
  std::shared_ptr<void> keepalive;         // the mmap backing zero-copy views

  // The tensor `name`; throws clip::Error naming the tensor and the file if missing or if
  // its shape differs from `expected_shape` (when given).
  const Tensor& get(const std::string& name, const std::vector<int64_t>& expected_shape = {}) const;
};

// `path` is a .safetensors file or a model directory (Hugging Face / Immich / ours:
// weights + config.json or open_clip_config.json + tokenizer files + preprocessing config).
LoadedCheckpoint load_checkpoint(const std::string& path);

}  // namespace clip
