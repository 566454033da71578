// RankGroup::Operation: one scale operation's record and the coordinator's bookkeeping while it
// runs. Private to the RankGroup sources.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "elastic/rank_group.h"
#include "elastic/scale_plan.h"

namespace tidal {

// How the cause of a failure the rank reported itself begins (its process exits right after).
inline constexpr char kReportedFailure[] = "reported a failure: ";

// Seconds from `from` to `to`, for the operation records.
inline double seconds_between(std::chrono::steady_clock::time_point from,
                              std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

struct RankGroup::Operation {
  std::string kind = "scale";  // scale, or recover (from a rank failure)
  std::string id;
  uint64_t serial = 0;
  ScaleRequest request;
  int from_ranks = 0;
  uint64_t epoch_before = 0;
  std::string phase = "preparing";  // preparing, committing, done, failed
  std::string result;               // ok, no-op, failed (once finished)
  std::string error;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Its outcome is decided (what remains is cleanup: reaping processes, dropping store keys).
  bool finished() const { return phase == "done" || phase == "failed"; }

  // The plan, once every old rank has reported (hold).
  bool planned = false;
  ScalePlan plan;
  uint64_t epoch = 0;  // the epoch it commits
  std::vector<std::vector<int32_t>> next_placements;
  std::vector<int> old_members;  // old rank order
  std::vector<int> new_members;  // new rank order (staying, then joining)
  std::vector<int> joining;      // members started for it
  std::map<int, nlohmann::json> held;
  std::set<int> standby_ready;
  std::string standby_error;
  std::set<int> committed;
  std::set<int> handed_off;

  // What it did, for the record and /metrics.
  double prepare_seconds = 0;
  double pause_seconds = 0;       // commit sent -> every new-epoch rank resumed (front's view)
  double rank_pause_seconds = 0;  // the longest pause a rank measured itself
  double move_seconds = 0;        // the longest weight move of a rank
  double warm_seconds = 0;        // the longest warm_and_capture of a rank
  double total_seconds = 0;
  int64_t bytes_moved = 0;
  int64_t requests_migrated = 0;
  nlohmann::json removed = nlohmann::json::array();      // {rank, member, warm_and_capture}
  nlohmann::json ranks_after = nlohmann::json::array();  // {rank, member, warm_and_capture}
  // A recovery: what failed, and what it took.
  std::string cause;
  // When the failure was detected (wall clock, so a benchmark can subtract when it killed a rank).
  std::chrono::system_clock::time_point detected_at{};
  int64_t experts_reloaded = 0;
  int64_t requests_recovered = 0;
};

}  // namespace tidal
