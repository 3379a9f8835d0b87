#pragma once
// clip.cpp's CLIP GGUF files (its models/convert_hf_to_gguf.py layout, docs/weights.md):
// tensor names derived from Hugging Face's ("t."/"v.", "blk.N", attn_q/k/v/out, ln1/ln2,
// ffn_down = HF fc1 and ffn_up = HF fc2, token_embd, position_embd, class_embd, patch_embd,
// pre_ln, post_ln, text_projection/visual_projection), hyper-parameters under clip.text.* and
// clip.vision.*, the token list in tokenizer.ggml.tokens. ViT towers only (clip.cpp has no
// ResNet). The files carry no logit_scale: ln(100), CLIP's trained value, is used.
#include <map>
#include <string>
#include <vector>

#include "core/gguf.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace clip {

// The GGUF name of a Hugging Face tensor name (clip.cpp's converter's chain of replacements).
std::string clip_gguf_tensor_name(const std::string& hf_name);

// The architecture from the file's clip.* keys and tensor shapes; errors name the file.
ModelConfig clip_gguf_config(const GgufFile& file);
// The transformer blocks' linear weights stored in q4_0 or q8_0 (all parts of one alike: in_proj
// from attn_q, attn_k, attn_v), by canonical name, as stored, and those stored in q4_1, q5_0 or
// q5_1 re-quantized to q8_0: they run on the block kernels (backend/block_quant.h) instead of
// widened to f32.
std::map<std::string, LoadedCheckpoint::BlockRows> clip_gguf_block_weights(const GgufFile& file,
                                                                          const ModelConfig& config);
// The file as an in-memory safetensors image (loaded like a Hugging Face checkpoint): every
// tensor under its Hugging Face name (f32 and f16 as stored, quantized ones dequantized to
// f32), plus "logit_scale"; unknown names are an error naming them. With `blocks`
// (clip_gguf_block_weights' result, for a network that runs them on the block kernels and
// never reads their f32 values), the tensors stored there are not dequantized: they read as
// zeros and take no memory.
std::vector<uint8_t> clip_gguf_safetensors_image(
    const GgufFile& file, const ModelConfig& config,
    const std::map<std::string, LoadedCheckpoint::BlockRows>* blocks = nullptr);

// Writes the model's `canonical` tensors (OpenAI names, as loaded) as clip.cpp writes a model of
// `file_type` f32 or f16 (under Hugging Face's names, which it derives its own from), with every 2-D weight in `weight_type` (f32, f16, q8_0, q4_0) and the
// 4-D patch embedding in f16, and `tokens` as the token list. q4_0 puts only the image tower's
// blocks in q4_0 and the other 2-D weights in q8_0 (as `--precision int4` does; clip.cpp reads
// per-tensor types). Atomic.
void write_clip_gguf(const std::string& path, const std::map<std::string, Tensor>& canonical, const ModelConfig& config,
                     const std::vector<std::string>& tokens, GgmlType weight_type, const std::vector<float>& image_mean,
                     const std::vector<float>& image_std, const std::string& name);

}  // namespace clip
