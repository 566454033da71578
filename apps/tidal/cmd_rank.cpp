// `tidal rank --coordinator tcp://HOST:PORT [--rank I]`: one rank process. The front's spawner
// starts these; any launcher (Slurm, Kubernetes, ssh) can too, pointed at the coordinator.
#include <memory>
#include <string>

#include "apps/tidal/commands.h"
#include "elastic/rank_worker.h"

namespace tidal::cli {

Command add_rank_command(CLI::App& app) {
  auto options = std::make_shared<RankWorkerOptions>();
  options->rank = -1;
  CLI::App* command = app.add_subcommand("rank", "Run one rank and join a coordinator");
  command
      ->add_option("--coordinator", options->control_endpoint,
                   "the coordinator's control endpoint, e.g. tcp://10.0.0.1:5555")
      ->required();
  command->add_option("--rank", options->rank, "rank index (default: the first free one)");
  command->add_option(
      "--lifeline-fd", options->lifeline_fd,
      "a pipe from the front that started this rank: the rank exits when it closes");
  return [options]() { return run_rank_worker(*options); };
}

}  // namespace tidal::cli
