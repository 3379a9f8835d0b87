#pragma once
// Loading a model by path, as clip::Model::load and the commands that need the network itself
// (clip eval) do it: the checkpoint (any format, naming scheme; the config beside it or
// config_path), its preprocessing (the model folder's, else CLIP's at the model's resolution;
// a contradicting image size is an error), its tokenizer (vocab_path, else the model folder's
// own files, else OpenAI's installed vocabulary for a model with OpenAI's 49,408 tokens; else
// none, with the reason kept for the first text call).
#include <memory>
#include <string>

#include "backend/matmul.h"
#include "model/clip_model.h"
#include "text/tokenizer.h"
#include "vision/preprocess.h"

namespace clip {

struct LoadedModel {
  std::unique_ptr<ClipModel> model;
  std::shared_ptr<Tokenizer> tokenizer;  // null when there is no vocabulary for the model
  std::string tokenizer_error;           // why there is none
  PreprocessConfig preprocess;
};

LoadedModel load_model(const std::string& path, const std::string& vocab_path, const std::string& config_path,
                       Precision precision);

}  // namespace clip
