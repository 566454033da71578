// Expert load balancing on a rank, between two steps: every rank of the group at the same step.
#pragma once

#include <cstdint>
#include <vector>

#include "elastic/rank_state.h"

namespace tidal {

// What this rank reports about expert load balancing (EngineLoad's eplb_ fields).
struct EplbReport {
  int64_t rebalances = 0;
  int64_t bytes_moved = 0;
  double seconds = 0;
  double longest_pause_seconds = 0;
  std::vector<double> balancedness_before;
  std::vector<double> balancedness_after;
};

// Agrees on the window's load (all-reduce) and plans each layer's new placement (pure and
// deterministic, so every rank plans the same); the layers that change join rank.eplb_pending.
// Collective.
void plan_rebalance(RankState& rank, EplbReport& report);

// Moves the next `max_layers` pending layers (0: all): weights into the existing slots, then the
// layer's tables rewritten in place, so each layer switches whole between two steps. Collective.
void move_pending_layers(RankState& rank, EplbReport& report, size_t max_layers);

// This rank's own window totals, [MoE layer][logical expert], for the coordinator to add up when
// it plans a transition (no collective).
std::vector<std::vector<double>> local_expert_load(const RankState& rank);

}  // namespace tidal
