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
#include <utility>
#include <vector>

#include "backend/block_quant.h"
#include "core/io.h"
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
  std::shared_ptr<const MappedFile> mapping;  // the same mmap when it is one (else null)
  std::string config_path;                 // the JSON config used, or "" (inferred from shapes)
  uint64_t file_size = 0;                  // bytes of weights_path

  // The tensor `name`; throws clip::Error naming the tensor and the file if missing or if
  // its shape differs from `expected_shape` (when given).
  const Tensor& get(const std::string& name, const std::vector<int64_t>& expected_shape = {}) const;
  // Whether data[0, count) is a zero-copy view of the mapped file (not a converted copy).
  bool is_mapped(const float* data, int64_t count) const;
  // For mapped weights that were copied (packed) by their user: their pages leave the
  // resident set (reading them again re-reads the file). Other memory is left alone.
  void release_pages(const float* data, int64_t count) const;

  // The transformer blocks' linear weights a GGUF file stores in q4_0 / q8_0 blocks, by
  // canonical name, as stored (in_proj: q, k, v rows one after another). `tensors` holds them
  // dequantized as well, for readers other than the products (clip convert).
  struct BlockRows {
    BlockFormat format = BlockFormat::Q4_0;
    int64_t rows = 0, cols = 0;
    std::vector<uint8_t> bytes;  // rows x (cols / 32) ggml blocks
  };
  std::map<std::string, BlockRows> block_weights;
  // The blocks of rows [first_row, first_row + rows) of the tensor whose f32 values `data`
  // points into (with `cols` columns), or null when that tensor has none.
  const BlockRows* block_rows_for(const float* data, int64_t rows, int64_t cols, int64_t& first_row) const;
  // For such weights once prepared from their blocks: the f32 copy's memory (in the file's
  // in-memory image, or a copy made at load such as a concatenated in_proj) is given back (it
  // reads as zeros afterwards). `data` must point into one of `tensors`.
  void discard_dequantized(const float* data, int64_t count) const;
};

// `path` is a .safetensors file or a model directory (Hugging Face / Immich / ours:
// weights + config.json or open_clip_config.json + tokenizer files + preprocessing config).
LoadedCheckpoint load_checkpoint(const std::string& path);

// ---- additions (src/model/weights.cpp) ----

struct LoadOptions {
  // A model config (open_clip JSON, wrapped or plain, or HF config.json) that overrides the
  // one found in a model directory and the shape inference for a bare file.
  std::string config_path;
  // Validate names, shapes and dtypes but convert nothing: `tensors` stays empty (for
  // `clip info`, which must not spend time and memory widening a large f16 file).
  bool validate_only = false;
  // For a network that runs a GGUF file's q4_0 / q8_0 block weights as stored (inference:
  // model/api's load_model): their f32 values are not made (they read as zeros), saving most
  // of the dequantized copy. Not where the values are read (conversion, training from a file).
  bool blocks_without_f32 = false;
};
LoadedCheckpoint load_checkpoint(const std::string& path, const LoadOptions& options);

const char* naming_scheme_name(NamingScheme scheme);  // "openai", "open_clip", "huggingface"

// Every canonical tensor the model with `config` has, with its shape, in a stable order
// (text tower, vision tower, logit_scale). ResNet batch-norm statistics (running_mean/var)
// are included; num_batches_tracked is not.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& config);

// The number of trainable parameters (as torch's model.parameters() counts them: everything
// in expected_tensors except batch-norm running statistics). ViT-B/32: 151,277,313.
int64_t parameter_count(const ModelConfig& config);

// build_model's inference: the architecture from canonical (OpenAI) names and shapes.
// `source` (a path) starts error messages. Activation is QuickGELU (OpenAI's weights).
ModelConfig infer_config_from_shapes(const std::map<std::string, std::vector<int64_t>>& shapes,
                                     const std::string& source);

// How a canonical tensor is stored in a Hugging Face CLIPModel file: one name, possibly
// transposed (the projections), or three (q, k, v) concatenated along dim 0 (in_proj).
// Throws for names HF has no counterpart for (ResNet tensors).
struct HfTensorMapping {
  std::vector<std::string> names;
  bool transposed = false;
};
HfTensorMapping hf_mapping_for(const std::string& canonical_name);

}  // namespace clip
