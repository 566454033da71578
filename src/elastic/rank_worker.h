// RankWorker: one rank process. It joins the group its config describes (experts of its slots,
// a Gloo communicator for the epoch), warms up once, then steps in lockstep with the other ranks,
// taking requests from the front and streaming outputs back.
#pragma once

#include <string>

namespace tidal {

struct RankWorkerOptions {
  std::string control_endpoint;  // the front's ZeroMQ ROUTER, e.g. tcp://127.0.0.1:5555
  int rank = 0;
  // The read end of the front's lifeline pipe (ranks the front starts); -1: none.
  int lifeline_fd = -1;
};

// Returns the process exit code: 0 after a clean shutdown, 1 when joining or serving failed (the
// front is told why before the rank exits).
int run_rank_worker(const RankWorkerOptions& options);

}  // namespace tidal
