// `tidal rank --coordinator tcp://HOST:PORT [--rank I] [--rank-secret-file PATH]`: one rank
// process. The front's spawner starts these; any launcher (Slurm, Kubernetes, ssh) can too,
// pointed at the coordinator and given the front's rank secret.
#include <cstdlib>
#include <memory>
#include <string>

#include "apps/tidal/commands.h"
#include "common/error.h"
#include "elastic/rank_secret.h"
#include "elastic/rank_worker.h"

namespace tidal::cli {

Command add_rank_command(CLI::App& app) {
  auto options = std::make_shared<RankWorkerOptions>();
  auto secret_file = std::make_shared<std::string>();
  options->rank = -1;
  CLI::App* command = app.add_subcommand("rank", "Run one rank and join a coordinator");
  command
      ->add_option("--coordinator", options->control_endpoint,
                   "the coordinator's control endpoint, e.g. tcp://10.0.0.1:5555")
      ->required();
  command->add_option("--rank", options->rank, "rank index (default: the first free one)");
  command->add_option("--rank-secret-file", *secret_file,
                      "a file holding the front's rank secret (the file its --rank-secret-file "
                      "names); without it, the secret comes from TIDAL_RANK_SECRET. The front "
                      "refuses a rank without it");
  command->add_option(
      "--lifeline-fd", options->lifeline_fd,
      "a pipe from the front that started this rank: the rank exits when it closes");
  command->add_option("--spawn-ticket", options->spawn_ticket,
                      "set by the front that started this rank: which of its starts this "
                      "process is (a rank started by hand has none)");
  return [options, secret_file]() {
    const Result<std::string> secret = rank_side_secret(*secret_file, std::getenv(kRankSecretEnv));
    if (!secret.is_ok()) TIDAL_FAIL(secret.status().message());
    options->secret = secret.value();
    return run_rank_worker(*options);
  };
}

}  // namespace tidal::cli
