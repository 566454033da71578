// Expert parallelism's dispatch plan: clear the blocks, then every choice takes a row of its
// rank's block through a shared-memory counter.
#include "eplb/replica_hash.h"
#include "kernels/cuda/expert_route.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 1024;

__global__ void __launch_bounds__(kThreads) route_experts_kernel(const ExpertRouteParams p) {
  __shared__ int32_t used[kMaxRouteRanks];
  const int64_t block_rows = p.num_ranks * p.capacity;
  for (int64_t i = threadIdx.x; i < block_rows; i += blockDim.x) {
    p.send_tokens[i] = -1;
    p.send_slots[i] = -1;
  }
  for (int64_t r = threadIdx.x; r < p.num_ranks; r += blockDim.x) used[r] = 0;
  __syncthreads();
  const int64_t choices = p.num_tokens * p.k;
  for (int64_t choice = threadIdx.x; choice < choices; choice += blockDim.x) {
    const int32_t expert = p.topk_ids[choice];
    const auto token = static_cast<uint32_t>(choice / p.k);
    int32_t position = -1;
    const bool padding = p.token_ids != nullptr && p.token_ids[token] == -1;
    if (expert >= 0 && expert < p.num_experts && !padding) {
      const auto replicas = static_cast<uint32_t>(p.replica_count[expert]);
      const int64_t slot =
          replicas == 0 ? -1
                        : p.replica_slots[expert * p.replica_width +
                                          eplb::replica_hash(token, static_cast<uint32_t>(expert)) %
                                              replicas];
      const int64_t rank = slot < 0 ? -1 : slot / p.slots_per_rank;
      if (rank >= 0 && rank < p.num_ranks) {
        const int32_t row = atomicAdd(&used[rank], 1);
        if (row < p.capacity) {
          const int64_t at = rank * p.capacity + row;
          p.send_tokens[at] = static_cast<int32_t>(token);
          p.send_slots[at] = static_cast<int32_t>(slot % p.slots_per_rank);
          position = static_cast<int32_t>(at);
          if (p.load_counts != nullptr) atomicAdd(&p.load_counts[expert], 1);
        }
      }
    }
    p.positions[choice] = position;
  }
}

}  // namespace

cudaError_t route_experts(const ExpertRouteParams& params, cudaStream_t stream) {
  if (params.num_ranks <= 0 || params.num_ranks > kMaxRouteRanks || params.slots_per_rank <= 0 ||
      params.capacity < 0) {
    return cudaErrorInvalidValue;
  }
  if (params.num_ranks * params.capacity == 0 && params.num_tokens * params.k == 0) {
    return cudaSuccess;
  }
  route_experts_kernel<<<1, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
