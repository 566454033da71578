// Expert parallelism's dispatch plan on the GPU (Backend::route_experts): one block, so the
// plan of a whole step costs one launch and no host round trip, and it can sit in a graph.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tidal::cuda {

struct ExpertRouteParams {
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

// Most ranks the plan's per-rank counters (shared memory) take.
constexpr int64_t kMaxRouteRanks = 1024;

// Rows of a block in atomic order. An id past num_experts, a slot outside the ranks or a full
// block leaves the choice unrouted (position -1).
cudaError_t route_experts(const ExpertRouteParams& params, cudaStream_t stream);

}  // namespace tidal::cuda
