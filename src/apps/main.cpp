// `clip`: the command-line tool. Subcommands live in cmd_*.cpp and register themselves.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/command.h"
#include "backend/comm.h"
#include "apps/stop_signals.h"
#include "backend/cpu_features.h"
#include "core/error.h"

namespace clip::app {
namespace {
struct Entry {
  std::string name;
  int order;
  CommandSetup setup;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}
// Levenshtein distance, for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The first argument that is not an option, when it names no subcommand: "unknown command
// 'embd'; did you mean 'embed'?" (CLI11 would only say that a subcommand is required).
std::string unknown_command_message(int argc, char** argv, const std::vector<Entry>& entries) {
  if (argc < 2 || argv[1][0] == '-') return "";
  const std::string word = argv[1];
  std::string best, names;
  size_t best_d = std::string::npos;
  for (const auto& e : entries) {
    if (e.name == word) return "";
    names += (names.empty() ? "" : ", ") + e.name;
    const size_t d = edit_distance(word, e.name);
    if (d < best_d) best_d = d, best = e.name;
  }
  std::string msg = "unknown command '" + word + "'";
  if (best_d <= std::max<size_t>(2, word.size() / 3)) msg += "; did you mean '" + best + "'?";
  return msg + " (commands: " + names + "; clip --help)";
}
// "embed " or "eval zeroshot ": the subcommand words before the first option, for a hint.
std::string help_path(int argc, char** argv) {
  std::string path;
  for (int i = 1; i < argc && i < 3 && argv[i][0] != '-'; ++i) {
    const std::string w = argv[i];
    if (w.find_first_not_of("abcdefghijklmnopqrstuvwxyz-") != std::string::npos) break;
    path += w + " ";
  }
  return path;
}
}  // namespace

CommandRegistrar::CommandRegistrar(std::string name, int order, CommandSetup setup) {
  registry().push_back({std::move(name), order, std::move(setup)});
}

}  // namespace clip::app

int main(int argc, char** argv) {
  using namespace clip::app;
  start_signal_watcher();  // before any other thread exists: they all inherit the blocked mask
  CLI::App app{"clip: CLIP (Radford et al., 2021) in C++ -- embed, classify, compare and evaluate"};
  app.set_version_flag("--version", std::string("clip ") + CLIP_VERSION);
  app.require_subcommand(1);
  app.footer(
      "One grammar (clip COMMAND --help for each command's flags, defaults and examples):\n"
      "  images positional (files, folders) or --images; --text T (repeatable), --texts-file F;\n"
      "  -m/--model, --vocab, --threads, -b/--batch-size, --truncate, --strict, --json where they apply.\n"
      "Examples:\n"
      "  clip zeroshot -m models/cifar10-vit-tiny cat.jpg --labels \"cat,dog,ship\"\n"
      "  clip embed -m models/cifar10-vit-tiny photos/ --text \"a cat\" -o emb.npy\n"
      "  clip similarity --embeddings emb.npy\n"
      "Exit status: 0 done, 1 error, 2 bad flags, 130/143 interrupted.");
  std::vector<Entry> entries = registry();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.order < b.order; });
  for (auto& e : entries) e.setup(app);
  if (const std::string msg = unknown_command_message(argc, argv, entries); !msg.empty()) {
    std::fprintf(stderr, "clip: error: %s\n", msg.c_str());
    return 1;
  }
  try {
    clip::cpu_isa();  // a bad CLIP_MAX_ISA is an error before any work
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a command's own status (clip train: 130/143 after Ctrl-C/SIGTERM)
  } catch (const CLI::ParseError& e) {
    // A flag CLI11 rejected: the same one-line form as every other error, status 2 (usage).
    std::fprintf(stderr, "clip: error: %s (see clip %s--help)\n", e.what(), help_path(argc, argv).c_str());
    return 2;
  } catch (const std::exception& e) {  // clip::Error and the rest
    // One rank of a data-parallel run (clip train under mpirun): the others are waiting for it
    // in a collective, so the whole job ends here.
    std::fprintf(stderr, "clip: error%s: %s\n", clip::comm_rank_suffix().c_str(), e.what());
    std::fflush(stderr);
    clip::comm_abort_job(1);
    return 1;
  }
  return 0;
}
