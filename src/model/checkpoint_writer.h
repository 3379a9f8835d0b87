#pragma once
// Writing a model's canonical tensors (the names and layouts of model/weights.h) in any of the
// three naming schemes the loader reads: for tests (synthetic checkpoints), training
// checkpoints and format conversion. Round trip: load_checkpoint(write(x)) == x.
#include <cstdint>
#include <map>
#include <string>

#include "core/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace clip {

// The tensors as stored in `scheme`, converted to `dtype` (F32, F16 or BF16).
//   OpenAI / OpenCLIP: canonical names unchanged.
//   HuggingFace: transformers' names; in_proj split into q/k/v; projections transposed; plus
//   the int64 "text_model.embeddings.position_ids" buffer transformers writes.
// `canonical` must hold every tensor of expected_tensors(config) with its shape.
NamedTensors tensors_for_scheme(const std::map<std::string, Tensor>& canonical, const ModelConfig& config,
                                NamingScheme scheme, DType dtype = DType::F32);

// One .safetensors file (atomic write).
void write_checkpoint(const std::string& path, const std::map<std::string, Tensor>& canonical,
                      const ModelConfig& config, NamingScheme scheme, DType dtype = DType::F32);

// A model directory the loader finds everything in: the weights plus the config of the scheme
// (HF: model.safetensors + config.json; open_clip: open_clip_model.safetensors +
// open_clip_config.json {"model_cfg": ...}; OpenAI: model.safetensors, no config, since the
// architecture is inferred from shapes). Creates `dir` if needed.
void write_model_directory(const std::string& dir, const std::map<std::string, Tensor>& canonical,
                           const ModelConfig& config, NamingScheme scheme, DType dtype = DType::F32);

// Deterministic random canonical weights for `config` (normal * `scale`; layer-norm and
// batch-norm scales near 1, running variances positive, logit_scale = ln(1/0.07)).
std::map<std::string, Tensor> random_canonical_tensors(const ModelConfig& config, uint64_t seed,
                                                       float scale = 0.02f);

}  // namespace clip
