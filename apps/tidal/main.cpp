// tidal: the command-line entry point (tokenize, generate, serve, rank).
#include <exception>
#include <iostream>
#include <map>
#include <string>

#include "apps/tidal/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"tidal: an elastic expert-parallel MoE inference server"};
  app.require_subcommand(1);
  std::map<std::string, tidal::cli::Command> commands;
  commands["tokenize"] = tidal::cli::add_tokenize_command(app);
  commands["generate"] = tidal::cli::add_generate_command(app);
  commands["serve"] = tidal::cli::add_serve_command(app);
  commands["rank"] = tidal::cli::add_rank_command(app);
  commands["scale"] = tidal::cli::add_scale_command(app);
  commands["bench"] = tidal::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  try {
    for (const auto& [name, run] : commands) {
      if (app.got_subcommand(name)) return run();
    }
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 1;
}
