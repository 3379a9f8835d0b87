// `clip`: the command-line tool. Subcommands live in cmd_*.cpp and register themselves.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "apps/command.h"
#include "core/cpu_features.h"
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
}  // namespace

CommandRegistrar::CommandRegistrar(std::string name, int order, CommandSetup setup) {
  registry().push_back({std::move(name), order, std::move(setup)});
}

}  // namespace clip::app

int main(int argc, char** argv) {
  using namespace clip::app;
  CLI::App app{"clip: CLIP (Radford et al., 2021) in C++ -- embed, classify, compare and evaluate"};
  app.set_version_flag("--version", std::string("clip ") + CLIP_VERSION);
  app.require_subcommand(1);
  std::vector<Entry> entries = registry();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.order < b.order; });
  for (auto& e : entries) e.setup(app);
  try {
    clip::cpu_isa();  // a bad CLIP_MAX_ISA is an error before any work
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const clip::Error& e) {
    std::fprintf(stderr, "clip: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clip: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
