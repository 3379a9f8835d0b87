#pragma once
// OpenAI's text transformer (model.py encode_text): token + positional embedding, residual
// blocks under a causal mask, ln_final, the row at the first end-of-text token (argmax of the
// ids, since end-of-text has the largest id), projection.
#include <cstdint>

#include "model/transformer.h"

namespace clip {

class TextTransformer {
 public:
  // Reads token_embedding, positional_embedding, transformer.*, ln_final.*, text_projection
  // (canonical names, F32 views; ckpt must outlive this) using ckpt.config.text.
  explicit TextTransformer(const LoadedCheckpoint& ckpt, Precision precision = Precision::F32);

  // ids: [batch, context] (row stride `context`, context <= context_length()); out:
  // [batch, embed_dim], not normalised. Because of the causal mask, positions after the
  // pooled one cannot affect it, so only positions 0 .. max_b(argmax_b) are computed.
  // Hook names: text.embed [B,T',d], text.block.<i> [B,T',d] (T' = positions computed),
  // text.ln_final [B,d] (pooled rows), text.output [B,embed]. Not safe to call concurrently.
  void encode(const int32_t* ids, int batch, int context, float* out,
              const ActivationHook* hook = nullptr);

  int context_length() const { return context_length_; }
  int embed_dim() const { return embed_dim_; }
  int vocab_size() const { return vocab_; }

 private:
  int context_length_ = 0, vocab_ = 0, width_ = 0, embed_dim_ = 0;
  float eps_ = 1e-5f;
  const float* token_embedding_ = nullptr;       // [vocab, width]
  const float* positional_embedding_ = nullptr;  // [context, width]
  const float* ln_final_weight_ = nullptr; const float* ln_final_bias_ = nullptr;
  const float* text_projection_ = nullptr;       // [width, embed]
  Transformer transformer_;
  TransformerWorkspace ws_;
  std::vector<float> x_, pooled_;
};

}  // namespace clip
