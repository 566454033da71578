// An elastic transition as one rank lives it. Old ranks (staying or leaving) and joining ranks
// take different parts:
//   prepare  staying ranks form the next epoch's communicator in the background (StandbyGroup)
//            while they keep serving; joining ranks form it while they join;
//   commit   old ranks, at one agreed step of the old group, move expert weights for the new
//            placement (move_for_transition); leaving ranks then hand their requests back and
//            exit; staying ranks switch to the new group and placement (switch_epoch); every
//            rank of the new epoch then runs warm_and_capture once, together.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "elastic/rank_state.h"
#include "eplb/placement.h"

namespace tidal {

struct RankTransition {
  uint64_t op = 0;
  uint64_t epoch = 0;
  int new_rank = -1;  // this rank's place in the new epoch; -1: it leaves
  int num_ranks = 0;
  std::vector<eplb::Placement> next;  // per MoE layer, at num_ranks
  eplb::RankMap rank_map;             // new rank -> old rank, -1 for joining ranks
};

// From a kStandby message; throws tidal::Error on a malformed one.
RankTransition transition_from_json(const nlohmann::json& message, int num_experts,
                                    int slots_per_rank);

// Forms the communicator of the transition's epoch on a thread of its own, so the rank keeps
// stepping in the old epoch meanwhile. The thread uses a store client of its own.
class StandbyGroup {
 public:
  StandbyGroup(RankState& rank, const RankTransition& transition);
  ~StandbyGroup();  // waits for the thread (a rendezvous that cannot complete times out)
  StandbyGroup(const StandbyGroup&) = delete;
  StandbyGroup& operator=(const StandbyGroup&) = delete;

  uint64_t op() const { return op_; }
  bool done() const { return done_.load(); }
  // Once done(): the communicator; throws tidal::Error with the failure when forming it failed.
  std::unique_ptr<Communicator> take();
  std::string error() const;

 private:
  uint64_t op_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  mutable std::mutex mutex_;
  std::unique_ptr<Communicator> group_;
  std::string error_;
};

struct CommitReport {
  int64_t bytes_moved = 0;  // expert weight bytes this rank received or copied
  double move_seconds = 0;
  double warm_seconds = 0;
  double pause_seconds = 0;  // from the agreed step to the end of warm_and_capture
};

// On every old rank at the same step, over the old group: the weight copies that turn the old
// placement into the new one, except into joining ranks (they loaded their slots while joining).
// Slot buffers keep their addresses. Collective over the old group.
void move_for_transition(RankState& rank, const RankTransition& transition, CommitReport& report);

// A staying rank takes its new place: the new group (for the engine and the expert executor),
// its new rank index and size, and every layer's new placement (tables rewritten in place).
void switch_epoch(RankState& rank, const RankTransition& transition,
                  std::unique_ptr<Communicator> group);

}  // namespace tidal
