// `clip tokenize "text"...`: ids and tokens of each text; `clip tokenizer train`: a CLIP-style
// BPE vocabulary from a caption corpus, written in OpenAI and Hugging Face formats.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli_common.h"
#include "apps/command.h"
#include "core/error.h"
#include "text/bpe_train.h"
#include "text/tokenizer.h"
#include "text/vocabulary.h"

namespace clip::app {
namespace {

// --vocab may name a .txt.gz, a vocab.json (merges.txt beside it) or a model directory; without
// it: $CLIP_VOCAB, then OpenAI's vocabulary installed with the program.
struct TokenizeOptions {
  std::vector<std::string> texts;
  std::string vocab;
  int context_length = 0;
  bool truncate = false, json = false;
};

void run_tokenize(const TokenizeOptions& o) {
  const Tokenizer tok = load_tokenizer(vocabulary_or_default(o.vocab));
  for (const std::string& text : o.texts) {
    std::vector<int32_t> ids;
    if (o.context_length > 0) {
      ids = tok.tokenize({text}, o.context_length, o.truncate);
    } else {
      ids = tok.encode(text);
    }
    // With --context-length the row ends at the first end token; the zeros after it are padding.
    std::vector<int32_t> used = ids;
    if (o.context_length > 0) {
      auto end = std::find(used.begin(), used.end(), tok.eot_token());
      used.erase(end == used.end() ? end : end + 1, used.end());
    }
    if (o.json) {
      nlohmann::json tokens = nlohmann::json::array();
      for (int32_t id : used) tokens.push_back(tok.token_string(id));
      print_json_line({{"text", text}, {"ids", ids}, {"tokens", tokens}, {"decoded", tok.decode(used)}});
      continue;
    }
    std::printf("ids:");
    for (int32_t id : ids) std::printf(" %d", id);
    std::printf("\ntokens:");
    for (int32_t id : used) std::printf(" %s", tok.token_string(id).c_str());
    std::printf("\ndecoded: %s\n", tok.decode(used).c_str());
  }
}

struct TrainOptions {
  std::vector<std::string> corpus;
  std::string output;
  int vocab_size = 49408;
  int64_t min_count = 2;
};

void run_train(const TrainOptions& o) {
  {  // the output folder first: a mistyped path fails before the training, not after it
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(o.output, ec);
    if (ec || !fs::is_directory(o.output, ec)) throw Error("-o " + o.output + ": cannot create this folder");
    check_output_file((fs::path(o.output) / "vocab.json").string(), "-o");
  }
  std::vector<std::string> corpus;
  for (const std::string& path : o.corpus) {
    std::vector<std::string> part = text::read_corpus(path);
    if (part.empty()) throw Error(path + ": no text in this corpus file (one caption per line expected)");
    corpus.insert(corpus.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  text::BpeTrainOptions options;
  options.vocab_size = o.vocab_size;
  options.min_pair_count = o.min_count;
  const text::TrainedBpe bpe = text::train_bpe(corpus, options);
  text::write_trained_bpe(bpe, o.output);
  std::printf("%zu texts, %zu merges, vocabulary size %d", corpus.size(), bpe.merges.size(), bpe.vocab_size());
  if (bpe.vocab_size() < o.vocab_size)
    std::printf(" (fewer than %d: no pair occurs %lld times or more)", o.vocab_size, static_cast<long long>(o.min_count));
  std::printf("\nwrote %s/bpe_vocab.txt.gz, %s/vocab.json, %s/merges.txt\n", o.output.c_str(), o.output.c_str(),
              o.output.c_str());
}

const CommandRegistrar tokenize_command("tokenize", 80, [](CLI::App& root) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = root.add_subcommand("tokenize", "Print the CLIP token ids and tokens of text");
  cmd->add_option("text", opts->texts, "Text(s) to tokenize")->required();
  cmd->add_option("--vocab", opts->vocab, "Vocabulary: .txt.gz, vocab.json (merges.txt beside it) or a model directory");
  cmd->add_option("--context-length", opts->context_length,
                  "Give the model's input row: start, ids, end, zero padding to this length");
  cmd->add_flag("--truncate", opts->truncate, "Cut texts that do not fit the context length");
  cmd->add_flag("--json", opts->json, "One JSON object per text: {\"text\", \"ids\", \"tokens\", \"decoded\"}");
  cmd->footer(
      "Examples:\n"
      "  clip tokenize \"Hello World!\"\n"
      "  clip tokenize --context-length 77 --json \"a photo of a cat\" \"a photo of a dog\"\n"
      "Vocabulary: --vocab, else $CLIP_VOCAB, else OpenAI's, installed with clip.");
  cmd->callback([opts] { run_tokenize(*opts); });
});

const CommandRegistrar tokenizer_command("tokenizer", 81, [](CLI::App& root) {
  CLI::App* cmd = root.add_subcommand("tokenizer", "Tokenizer tools");
  cmd->require_subcommand(1);
  auto opts = std::make_shared<TrainOptions>();
  CLI::App* train = cmd->add_subcommand("train", "Train a CLIP-style BPE vocabulary on a caption corpus");
  train->add_option("corpus", opts->corpus, "Text files (one caption per line) or image,caption CSVs, read in order")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--vocab-size", opts->vocab_size, "Vocabulary size: 512 bytes + merges + 2 specials")
      ->capture_default_str();
  train->add_option("-o,--output", opts->output, "Output directory")->required();
  train->add_option("--min-count", opts->min_count, "Stop when no pair occurs this often")->capture_default_str();
  train->footer(
      "Examples:\n"
      "  clip tokenizer train --vocab-size 8192 -o vocab/ captions.txt\n"
      "  clip tokenizer train --vocab-size 560 --min-count 1 -o vocab/ pairs.csv   # the caption column\n"
      "Then: clip train --vocab vocab/ ...  or  clip tokenize --vocab vocab/ \"a photo\"");
  train->callback([opts] { run_train(*opts); });
});

}  // namespace
}  // namespace clip::app
