// Planning the recovery from lost ranks (pure): each MoE layer's placement over the surviving
// ranks, and the experts to read back from the checkpoint. An expert that still has a replica on
// a survivor costs nothing: the tables stop routing to the lost copy. Only experts the lost ranks
// held alone are restored, into slots that held nothing or a spare copy of another expert.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "eplb/placement.h"

namespace tidal::eplb {

struct RecoveryInput {
  int num_logical = 0;
  int slots_per_rank = 0;
  // [MoE layer][surviving rank][local slot]: the logical expert each survivor's slot holds now, or
  // -1 where it holds none or its contents are unknown (a weight move broke off mid-layer). The
  // survivors are listed in their new rank order.
  std::vector<std::vector<std::vector<int32_t>>> held = {};
};

// One expert read from the checkpoint into one survivor's slot.
struct ExpertLoad {
  int32_t logical_id = -1;
  int rank_idx = -1;  // survivor (new numbering)
  int slot_idx = -1;  // local slot
};

struct LayerRecovery {
  Placement next;                 // over the survivors
  std::vector<ExpertLoad> loads;  // by rank, then slot
};

struct RecoveryPlan {
  std::vector<LayerRecovery> layers;
  int num_loads = 0;  // over every layer
};

// Keeps every survivor's slot that it can; gives each expert no survivor holds a slot that held
// nothing (or nothing known) on the rank that received least, else one that held a spare copy of
// the expert with the most copies. Never overwrites an expert's last copy, so every expert that
// survived stays where it is. invalid_argument when the survivors' slots cannot hold every expert.
Result<RecoveryPlan> plan_recovery(const RecoveryInput& input);

}  // namespace tidal::eplb
