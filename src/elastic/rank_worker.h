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
  // Set by the front that forked this process: which of its starts it is, so that the hello of
  // a process it has since killed (a restarted start) cannot take the place of its successor.
  // -1: started by hand.
  int spawn_ticket = -1;
  std::string secret = {};  // the front's rank secret (rank_secret.h), sent in hello and heartbeats
};

// Exit codes of run_rank_worker besides 0 (a clean shutdown).
inline constexpr int kRankExitFailed = 1;   // joining or serving failed; the front was told why
inline constexpr int kRankExitRefused = 2;  // the front refused it: no or a wrong secret, no place

// Returns the process exit code (above).
int run_rank_worker(const RankWorkerOptions& options);

}  // namespace tidal
