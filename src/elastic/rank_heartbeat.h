// RankHeartbeat: a thread of a rank process that tells the front, on a socket of its own, that
// the process is alive (the front declares a rank that falls silent for --rank-timeout failed);
// that hears, on the same socket, when the front reports the rank's group lost (so that a
// collective blocked on a dead peer gives up at once, while the stepping thread is stuck in it);
// and that ends the process when the front is gone (its lifeline pipe closes).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace tidal {

// The heartbeat socket's identity is the control socket's with this suffix.
inline constexpr char kHeartbeatIdentitySuffix[] = "-heartbeat";

struct RankHeartbeatOptions {
  std::string control_endpoint;  // the front's ROUTER
  std::string identity;          // the rank's control socket identity, which the front knows
  std::string secret = {};       // the rank secret, in every beat (see rank_secret.h)
  // The read end of a pipe whose write end only the front holds; -1 for a rank started by hand.
  int lifeline_fd = -1;
  std::chrono::milliseconds period = std::chrono::milliseconds(100);
};

class RankHeartbeat {
 public:
  explicit RankHeartbeat(RankHeartbeatOptions options);
  ~RankHeartbeat();  // stops the thread; never throws
  RankHeartbeat(const RankHeartbeat&) = delete;
  RankHeartbeat& operator=(const RankHeartbeat&) = delete;

  // The newest epoch the front reported lost (0: none yet); communicators poll it.
  const std::atomic<uint64_t>& lost_epoch() const { return lost_epoch_; }

 private:
  void run();

  RankHeartbeatOptions options_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> lost_epoch_{0};
  std::thread thread_;
};

}  // namespace tidal
