#pragma once
// Where a tokenizer comes from: a path the user names, or the OpenAI vocabulary installed with
// the program. Never the current directory: `clip tokenize "Hello"` works from anywhere.
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace clip {

// The file name of OpenAI's vocabulary (the one every OpenAI / open_clip model uses).
inline constexpr const char* kOpenAIVocabFile = "bpe_simple_vocab_16e6.txt.gz";

// One file a tokenizer reads: where it is, and the name it has in a model directory (where
// Tokenizer::from_directory finds it again).
struct TokenizerFile {
  std::string path;
  std::string name;
};

// The files that make the tokenizer at `path`, the one rule for loading it, copying it beside a
// trained model and naming it. `path`: a folder (vocab.json + merges.txt, else OpenAI's
// bpe_simple_vocab_16e6.txt.gz, else the first *.txt.gz by name), a vocab.json (merges.txt
// beside it), or a BPE merges file (.txt.gz; named bpe_vocab.txt.gz when it has no such name).
// clip::Error naming `path` when there is none.
std::vector<TokenizerFile> tokenizer_files(const std::string& path);

// The tokenizer of tokenizer_files(path).
Tokenizer load_tokenizer(const std::string& path);

// Candidate locations of the default vocabulary, in order: $CLIP_VOCAB; share/clip/ beside the
// executable (the build tree); ../share/clip/ above it (an installed prefix); the configured
// install data folder.
std::vector<std::string> default_vocabulary_candidates();
// The first candidate that exists, or "".
std::string default_vocabulary_path();
// "no vocabulary: pass --vocab ... (looked in: ...)".
std::string no_vocabulary_message();
// `vocab` when given, else the default; clip::Error with no_vocabulary_message() if neither.
std::string vocabulary_or_default(const std::string& vocab);

}  // namespace clip
