// Planning an elastic transition (pure): which ranks leave, how the survivors are renumbered, and
// each MoE layer's placement at the target size. The coordinator runs it once per operation and
// sends the result to every rank, so ranks never plan on their own and cannot disagree.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "engine/scale_control.h"
#include "eplb/placement.h"

namespace tidal {

struct ScalePlanInput {
  int num_logical = 0;
  int slots_per_rank = 0;
  int max_num_ranks = 0;  // devices (or CPU rank places) the server may use at most
  std::vector<eplb::Placement> current = {};  // per MoE layer, all at the current size
  // Per MoE layer, load per logical expert (tokens routed in the load window); empty: uniform.
  std::vector<std::vector<double>> load = {};
  std::vector<int64_t> outstanding_tokens = {};  // per current rank; empty: all equal
};

struct ScalePlan {
  int old_num_ranks = 0;
  int new_num_ranks = 0;
  std::vector<int> removed = {};  // old ranks that leave, ascending
  // new rank -> old rank it continues, -1 for a fresh rank. Survivors keep their relative order
  // (renumbered from 0) and fresh ranks come after them.
  eplb::RankMap rank_map = {};
  std::vector<eplb::Placement> next = {};  // per MoE layer, at the target size
  int num_fresh() const;
};

// An invalid_argument Status, with the reason, for a target the server cannot reach: below 1,
// below ceil(E / S), above max_num_ranks, or a bad remove_ranks list. A target equal to the
// current size gives a plan with nothing to do (the caller treats it as a no-op success).
Result<ScalePlan> plan_scale(const ScalePlanInput& input, const ScaleRequest& request);

}  // namespace tidal
