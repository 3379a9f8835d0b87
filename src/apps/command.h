#pragma once
// Subcommands register themselves: each src/apps/cmd_*.cpp holds one static CommandRegistrar
// whose setup adds a CLI11 subcommand (with its options and callback) to the root app.
// main.cpp sorts them by `order`, so `clip --help` lists them in a stable, sensible order.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace clip::app {

using CommandSetup = std::function<void(CLI::App& root)>;

struct CommandRegistrar {
  CommandRegistrar(std::string name, int order, CommandSetup setup);
};

}  // namespace clip::app
