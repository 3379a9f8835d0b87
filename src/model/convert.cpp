#include "model/convert.h"

#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/io.h"
#include "model/checkpoint_writer.h"
#include "model/gguf_clip.h"
#include "model/weights.h"
#include "text/tokenizer.h"
#include "text/vocabulary.h"
#include "vision/preprocess.h"

namespace clip {

ConvertReport convert_model(const std::string& input, const std::string& output, const std::string& type) {
  ConvertReport rep;
  rep.type = type;
  const bool to_gguf = ends_with_ci(output, ".gguf"), to_safetensors = ends_with_ci(output, ".safetensors");
  if (!to_gguf && !to_safetensors) throw Error(output + ": the output must end in .gguf or .safetensors");
  GgmlType gtype = GgmlType::F32;
  DType dtype = DType::F32;
  if (to_gguf) {
    if (!parse_ggml_type(type, gtype) || !(gtype == GgmlType::F32 || gtype == GgmlType::F16 || gtype == GgmlType::Q8_0 ||
                                           gtype == GgmlType::Q4_0))
      throw Error("--type " + type + ": a GGUF is written as f32, f16, q8_0 or q4_0");
  } else if (type == "f32") {
    dtype = DType::F32;
  } else if (type == "f16") {
    dtype = DType::F16;
  } else if (type == "bf16") {
    dtype = DType::BF16;
  } else {
    throw Error("--type " + type + ": a safetensors file is written as f32, f16 or bf16");
  }
  const LoadedCheckpoint ck = load_checkpoint(input);
  if (to_safetensors) {
    rep.format = "safetensors";
    write_checkpoint(output, ck.tensors, ck.config, NamingScheme::OpenAI, dtype);
  } else {
    rep.format = "gguf";
    // The token list: the model folder's tokenizer, else OpenAI's vocabulary.
    std::optional<Tokenizer> tok;
    if (!ck.model_dir.empty()) {
      try {
        tok = Tokenizer::from_directory(ck.model_dir);
      } catch (const Error&) {
      }
    }
    if (!tok) tok = load_tokenizer(vocabulary_or_default(""));
    if (tok->vocab_size() != ck.config.text.vocab_size)
      throw Error(input + ": the tokenizer has " + std::to_string(tok->vocab_size()) + " tokens but the model " +
                  std::to_string(ck.config.text.vocab_size) + " (put the model's vocabulary beside it)");
    std::vector<std::string> tokens;
    for (int i = 0; i < tok->vocab_size(); ++i) tokens.push_back(tok->token_string(i));
    PreprocessConfig pre;
    if (!ck.model_dir.empty()) {
      try {
        pre = load_preprocess_config(ck.model_dir);
      } catch (const Error&) {
      }
    }
    const std::string name = std::filesystem::path(input).filename().string();
    write_clip_gguf(output, ck.tensors, ck.config, tokens, gtype,
                    {pre.mean[0], pre.mean[1], pre.mean[2]}, {pre.std[0], pre.std[1], pre.std[2]}, name);
  }
  rep.tensors = int64_t(ck.tensors.size());
  std::error_code ec;
  rep.bytes = uint64_t(std::filesystem::file_size(output, ec));
  return rep;
}

}  // namespace clip
