// The subcommands of the tidal CLI: each registers its options and returns its exit code.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace tidal::cli {

using Command = std::function<int()>;

Command add_tokenize_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_rank_command(CLI::App& app);
Command add_scale_command(CLI::App& app);
Command add_bench_command(CLI::App& app);

}  // namespace tidal::cli
