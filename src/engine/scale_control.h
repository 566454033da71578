// ScaleControl: what the admin API needs from an engine whose rank count can change while it
// serves (a RankGroup). The in-process single engine has none.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tidal {

struct ScaleRequest {
  int target_ranks = 0;
  // Old ranks to remove (scale-down only; exactly current - target of them). Empty: the ranks
  // with the fewest outstanding tokens leave (fewest requests to hand over), ties to the highest.
  std::vector<int> remove_ranks = {};
};

// Counters and the last transition's timings, for /metrics.
struct ScaleStats {
  uint64_t epoch = 0;
  int num_ranks = 0;
  int64_t transitions_ok = 0;
  int64_t transitions_failed = 0;
  int64_t requests_migrated = 0;  // requests continued on another rank, over all transitions
  int64_t bytes_moved = 0;        // expert weight bytes moved, over all transitions
  // The last successful transition (0 before the first).
  double last_prepare_seconds = 0;
  double last_pause_seconds = 0;  // commit sent -> every rank of the new epoch resumed
  double last_move_seconds = 0;
  double last_warm_and_capture_seconds = 0;
  double last_total_seconds = 0;
  // Rank failures and the recoveries from them.
  int64_t rank_failures = 0;
  int64_t recoveries_ok = 0;
  int64_t recoveries_failed = 0;
  int64_t requests_recovered = 0;     // requests continued from the ledger after a failure
  int64_t expert_bytes_reloaded = 0;  // read back from the checkpoint by recoveries
  // Each recovery's seconds from the failure's detection to the survivors serving (the pause
  // clients saw), the latest last; the last 1000 are kept.
  std::vector<double> recovery_seconds = {};
};

class ScaleControl {
 public:
  virtual ~ScaleControl() = default;
  // Starts a transition to request.target_ranks and returns its operation id; the target equal
  // to the current size is recorded at once as a successful no-op. invalid_argument (with the
  // reason) for a target this server cannot reach; kConflict, naming it, while another runs.
  virtual Result<std::string> start_scale(const ScaleRequest& request) = 0;
  // The operation's record (id, phase, result, error, timings, ranks); nullopt for an unknown id.
  virtual std::optional<nlohmann::json> scale_operation(const std::string& id) const = 0;
  // Epoch, ranks (with their members and warm-up counts), placement summary, running operation.
  virtual nlohmann::json topology() const = 0;
  virtual bool is_scaling() const = 0;
  virtual ScaleStats scale_stats() const = 0;
};

}  // namespace tidal
