// Expert parallelism's dispatch plan on the CPU: one pass in choice order.
#include "kernels/cpu/expert_route.h"

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "eplb/replica_hash.h"

namespace tidal::cpu {

void route_experts(const ExpertRouteArgs& a) {
  const int64_t block_rows = a.num_ranks * a.capacity;
  std::fill_n(a.send_tokens, block_rows, -1);
  std::fill_n(a.send_slots, block_rows, -1);
  std::vector<int64_t> used(static_cast<size_t>(a.num_ranks), 0);
  for (int64_t choice = 0; choice < a.num_tokens * a.k; ++choice) {
    const int32_t expert = a.topk_ids[choice];
    const int64_t token = choice / a.k;
    a.positions[choice] = -1;
    if (expert < 0 || (a.token_ids != nullptr && a.token_ids[token] == -1)) continue;
    TIDAL_CHECK(expert < a.num_experts, "routed expert ", expert, " of ", a.num_experts);
    const auto replicas = static_cast<uint32_t>(a.replica_count[expert]);
    TIDAL_CHECK(replicas > 0, "expert ", expert, " has no replica");
    const uint32_t replica =
        eplb::replica_hash(static_cast<uint32_t>(token), static_cast<uint32_t>(expert)) % replicas;
    const int64_t slot = a.replica_slots[expert * a.replica_width + replica];
    const int64_t rank = slot / a.slots_per_rank;
    TIDAL_CHECK(slot >= 0 && rank < a.num_ranks, "expert ", expert, " replica ", replica,
                " in slot ", slot, ", outside the ", a.num_ranks, " ranks");
    int64_t& row = used[static_cast<size_t>(rank)];
    TIDAL_CHECK(row < a.capacity, "the dispatch block of rank ", rank, " is full at ", a.capacity,
                " rows");
    const int64_t at = rank * a.capacity + row++;
    a.send_tokens[at] = static_cast<int32_t>(token);
    a.send_slots[at] = static_cast<int32_t>(slot % a.slots_per_rank);
    a.positions[choice] = static_cast<int32_t>(at);
    if (a.load_counts != nullptr) ++a.load_counts[expert];
  }
}

}  // namespace tidal::cpu
