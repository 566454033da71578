// Placement: which logical expert each physical expert slot of one MoE layer holds, validated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tidal::eplb {

// Fewest ranks that can hold every logical expert once: ceil(num_logical / slots_per_rank).
int min_num_ranks(int num_logical, int slots_per_rank);

// Whether (E, R, S) can be placed at all. A value, not an exception, because a scale request for
// too few ranks is the user's mistake and the coordinator must refuse it cleanly.
Status check_shape(int num_logical, int num_ranks, int slots_per_rank);

// How the ranks of a new placement continue those of an old one: rank_map[new_rank_idx] is the
// old rank whose slots (and weights) that rank keeps, or -1 for a fresh rank. Any old rank may be
// dropped (removing rank 1 of 0..3 gives {0, 2, 3}); no old rank appears twice.
using RankMap = std::vector<int>;

// New rank i continues old rank i while both exist: the map for adding or removing the last ranks.
RankMap identity_rank_map(int old_num_ranks, int new_num_ranks);

// Throws tidal::Error unless rank_map has new_num_ranks entries, each -1 or a distinct old rank.
void check_rank_map(const RankMap& rank_map, int old_num_ranks, int new_num_ranks);

// One MoE layer's placement. A model holds one per MoE layer, because DeepSeek-style balancing
// gives each layer its own replica counts from its own load; all layers share R and S.
//
// A physical slot id is rank_idx * slots_per_rank + local_slot_idx. A slot holds a logical
// expert id in [0, E) or -1 (empty). The policy fills every slot; -1 exists so that a hand-made
// placement with E < R*S need not replicate. A rank may hold two copies of one expert (useless,
// never wrong); the policy only does that when it cannot be avoided (E < S).
//
// The constructor validates, so a Placement that exists is always valid.
class Placement {
 public:
  Placement(int num_logical, int num_ranks, int slots_per_rank,
            std::vector<int32_t> physical_to_logical);

  int num_logical() const { return num_logical_; }
  int num_ranks() const { return num_ranks_; }
  int slots_per_rank() const { return slots_per_rank_; }
  int num_physical() const { return num_ranks_ * slots_per_rank_; }

  // [R * S], indexed by physical slot id.
  const std::vector<int32_t>& physical_to_logical() const { return physical_to_logical_; }
  int32_t logical_at(int rank_idx, int local_slot_idx) const;
  // Physical slot ids holding logical_id, ascending. Never empty.
  const std::vector<int32_t>& replicas(int logical_id) const;
  int num_replicas(int logical_id) const { return static_cast<int>(replicas(logical_id).size()); }
  int max_num_replicas() const;
  // [S]: the logical expert in each local slot of rank_idx (what that rank's expert GEMMs run).
  std::vector<int32_t> local_slot_to_logical(int rank_idx) const;

  // Throws tidal::Error naming the first problem: bad shape, table size, an id out of range, or
  // a logical expert with no replica.
  static void validate(int num_logical, int num_ranks, int slots_per_rank,
                       const std::vector<int32_t>& physical_to_logical);

  // One line per rank, e.g. "rank 0: 0 1 2 | rank 1: 3 4 0", for test failures and logs.
  std::string to_string() const;

  bool operator==(const Placement& other) const;

 private:
  int num_logical_;
  int num_ranks_;
  int slots_per_rank_;
  std::vector<int32_t> physical_to_logical_;
  std::vector<std::vector<int32_t>> logical_to_replicas_;  // derived
};

}  // namespace tidal::eplb
