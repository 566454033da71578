// CPU reference of expert parallelism's dispatch plan (Backend::route_experts).
#pragma once

#include <cstdint>

namespace tidal::cpu {

struct ExpertRouteArgs {
  const int32_t* topk_ids = nullptr;  // [num_tokens, k] logical experts; < 0: not routed
  int64_t num_tokens = 0;
  int64_t k = 0;
  const int32_t* replica_count = nullptr;  // [num_experts]
  const int32_t* replica_slots = nullptr;  // [num_experts, replica_width]
  int64_t num_experts = 0;
  int64_t replica_width = 0;
  int64_t slots_per_rank = 0;
  int64_t num_ranks = 0;
  int64_t capacity = 0;
  int32_t* send_tokens = nullptr;      // [num_ranks * capacity]
  int32_t* send_slots = nullptr;       // [num_ranks * capacity]
  int32_t* positions = nullptr;        // [num_tokens * k]
  const int32_t* token_ids = nullptr;  // [num_tokens] or null: -1 marks padding (not routed)
  int32_t* load_counts = nullptr;      // [num_experts] or null: += 1 per routed choice
};

// Rows of each block in choice order. Throws tidal::Error for an id past num_experts, a table
// entry outside the ranks, or a full block.
void route_experts(const ExpertRouteArgs& args);

}  // namespace tidal::cpu
