// MoE kernels: a one-block alignment pass (count per slot, pad each slot's rows to the GEMM tile,
// place every assignment), two grouped GEMM launches, then the combine in top-k order.
#include <algorithm>

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/moe_gemm.cuh"

namespace tidal::cuda {
namespace {

constexpr int kAlignThreads = 1024;
constexpr int kCombineThreads = 256;
// The alignment pass keeps two ints per slot in shared memory: at most 6144 slots per rank.
constexpr size_t kMaxAlignSharedBytes = 48 * 1024;
constexpr size_t kRegionAlignment = 256;

size_t align_up(size_t bytes) {
  return (bytes + kRegionAlignment - 1) / kRegionAlignment * kRegionAlignment;
}

// The grouped GEMM for a call, by the rows a slot gets on average (known on the host, fixed for a
// graph bucket, never read from the routing): 16- then 32-row tiles while streaming the weights
// is the cost (decode), 128 rows once the tensor cores are (prefill); thresholds measured on an
// H200 (moe_gemm.cuh). A hot slot above the average gets more tiles, each streaming its weights
// again (mostly from L2: its tiles are adjacent in the grid). kWmma is gemm.cuh's kernel, for
// F32/F16 weights and sizes that are not multiples of 8.
enum class ExpertGemm { kWmma, kDecode, kBatch, kPrefill };
constexpr int64_t kDecodeMaxRowsPerSlot = 8;
constexpr int64_t kBatchMaxRowsPerSlot = 32;

ExpertGemm pipelined_gemm(int64_t num_assignments, int64_t num_slots) {
  if (num_assignments <= kDecodeMaxRowsPerSlot * num_slots) return ExpertGemm::kDecode;
  if (num_assignments <= kBatchMaxRowsPerSlot * num_slots) return ExpertGemm::kBatch;
  return ExpertGemm::kPrefill;
}

ExpertGemm choose_gemm(const MoeExpertsParams& p, const void* workspace) {
  const auto aligned = [](const void* pointer) {
    return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
  };
  if (p.weight_type != ElementType::kBF16 || p.hidden % 8 != 0 || p.intermediate % 8 != 0 ||
      !aligned(p.x) || !aligned(p.gate_up) || !aligned(p.down) || !aligned(workspace)) {
    return ExpertGemm::kWmma;
  }
  return pipelined_gemm(p.num_tokens * p.k, p.num_slots);
}

int64_t tile_rows(ExpertGemm variant) {
  switch (variant) {
    case ExpertGemm::kWmma:
      return gemm::kBlockM;
    case ExpertGemm::kDecode:
      return gemm::DecodeTile::kTileM;
    case ExpertGemm::kBatch:
      return gemm::BatchTile::kTileM;
    case ExpertGemm::kPrefill:
      return gemm::PrefillTile::kTileM;
  }
  return gemm::kBlockM;
}

// Every slot's rows padded to a whole GEMM tile, so each M tile belongs to exactly one slot.
// Only slots that receive rows get a segment: at most min(slots, assignments) of them.
int64_t max_padded_rows(int64_t num_assignments, int64_t num_slots, int64_t tile) {
  const int64_t used_slots = num_slots < num_assignments ? num_slots : num_assignments;
  const int64_t rows = num_assignments + used_slots * (tile - 1);
  return (rows + tile - 1) / tile * tile;
}

// Carves the caller's workspace into the alignment outputs and the two intermediate buffers.
struct MoeScratch {
  int32_t* sorted_rows = nullptr;       // [max_padded]: assignment of each padded row, -1 padding
  int32_t* tile_slots = nullptr;        // [max_tiles]
  int32_t* inverse = nullptr;           // [num_assignments]: padded row of each assignment, -1 none
  int32_t* num_tiles = nullptr;         // [1]
  __nv_bfloat16* activated = nullptr;   // [max_padded, intermediate]
  __nv_bfloat16* expert_out = nullptr;  // [max_padded, hidden]
  size_t bytes = 0;
};

MoeScratch carve(char* base, int64_t num_assignments, int64_t num_slots, int64_t hidden,
                 int64_t intermediate, int64_t tile) {
  const int64_t padded = max_padded_rows(num_assignments, num_slots, tile);
  const int64_t tiles = padded / tile;
  MoeScratch scratch;
  size_t offset = 0;
  auto take = [&](size_t bytes) {
    char* region = base == nullptr ? nullptr : base + offset;
    offset += align_up(bytes);
    return region;
  };
  const auto n = [](int64_t count) { return static_cast<size_t>(count); };
  scratch.sorted_rows = reinterpret_cast<int32_t*>(take(n(padded) * sizeof(int32_t)));
  scratch.tile_slots = reinterpret_cast<int32_t*>(take(n(tiles) * sizeof(int32_t)));
  scratch.inverse = reinterpret_cast<int32_t*>(take(n(num_assignments) * sizeof(int32_t)));
  scratch.num_tiles = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
  scratch.activated =
      reinterpret_cast<__nv_bfloat16*>(take(n(padded * intermediate) * sizeof(__nv_bfloat16)));
  scratch.expert_out =
      reinterpret_cast<__nv_bfloat16*>(take(n(padded * hidden) * sizeof(__nv_bfloat16)));
  scratch.bytes = offset;
  return scratch;
}

// One block: small enough work (assignments and slots of one step) that grid-wide sync is not
// worth it. Counts and cursors live in shared memory (num_slots of each); warp 0 scans them. Rows
// within a slot land in atomic order; the GEMM computes each row independently of its
// neighbours, so results do not depend on that order.
__global__ void __launch_bounds__(kAlignThreads)
    moe_align_kernel(const int32_t* __restrict__ topk_slots, int64_t num_assignments,
                     int64_t num_slots, int32_t tile, int64_t max_padded, MoeScratch scratch) {
  extern __shared__ int32_t align_shared[];
  int32_t* counts = align_shared;
  int32_t* cursors = align_shared + num_slots;
  const int tid = static_cast<int>(threadIdx.x);
  for (int64_t s = tid; s < num_slots; s += blockDim.x) counts[s] = 0;
  for (int64_t r = tid; r < max_padded; r += blockDim.x) scratch.sorted_rows[r] = -1;
  __syncthreads();
  for (int64_t a = tid; a < num_assignments; a += blockDim.x) {
    const int32_t slot = topk_slots[a];
    if (slot >= 0 && slot < num_slots) atomicAdd(&counts[slot], 1);
  }
  __syncthreads();
  if (tid < 32) {
    // Exclusive scan of padded counts into the cursors (start row of each slot's segment), by
    // warp 0: each lane sums a run of consecutive slots, the warp scans the lane sums with
    // shuffles, and each lane writes its run's cursors. (One thread walking all slots cost
    // microseconds at batch 1, where the whole MoE layer takes tens.)
    const auto padded = [tile](int32_t count) { return (count + tile - 1) / tile * tile; };
    const int64_t per_lane = (num_slots + 31) / 32;
    const int64_t begin = tid * per_lane < num_slots ? tid * per_lane : num_slots;
    const int64_t end = begin + per_lane < num_slots ? begin + per_lane : num_slots;
    int32_t lane_rows = 0;
    for (int64_t s = begin; s < end; ++s) lane_rows += padded(counts[s]);
    int32_t inclusive = lane_rows;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int32_t below = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (tid >= offset) inclusive += below;
    }
    int32_t row = inclusive - lane_rows;
    for (int64_t s = begin; s < end; ++s) {
      cursors[s] = row;
      row += padded(counts[s]);
    }
    if (tid == 31) *scratch.num_tiles = inclusive / tile;
  }
  __syncthreads();
  for (int64_t s = tid; s < num_slots; s += blockDim.x) {
    const int32_t first_tile = cursors[s] / tile;
    const int32_t tiles = (counts[s] + tile - 1) / tile;
    for (int32_t t = 0; t < tiles; ++t)
      scratch.tile_slots[first_tile + t] = static_cast<int32_t>(s);
  }
  __syncthreads();
  for (int64_t a = tid; a < num_assignments; a += blockDim.x) {
    const int32_t slot = topk_slots[a];
    int32_t row = -1;
    if (slot >= 0 && slot < num_slots) {
      row = atomicAdd(&cursors[slot], 1);
      scratch.sorted_rows[row] = static_cast<int32_t>(a);
    }
    scratch.inverse[a] = row;
  }
}

// out[t, i] = sum_j w[t, j] * rows[index(t * k + j), i]; index null: identity, -1: skipped.
__global__ void combine_kernel(const __nv_bfloat16* __restrict__ rows,
                               const int32_t* __restrict__ row_index,
                               const float* __restrict__ topk_weights, int64_t num_tokens,
                               int64_t k, int64_t hidden, __nv_bfloat16* __restrict__ out) {
  const int64_t total = num_tokens * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t token = i / hidden;
    const int64_t column = i % hidden;
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t assignment = token * k + j;
      const int64_t row = row_index == nullptr ? assignment : row_index[assignment];
      if (row < 0) continue;
      sum += topk_weights[assignment] * __bfloat162float(rows[row * hidden + column]);
    }
    out[i] = __float2bfloat16(sum);
  }
}

template <typename Config>
cudaError_t launch_pipelined(const gemm::GemmArgs& gate_up, const gemm::GemmArgs& down,
                             int64_t max_tiles, cudaStream_t stream) {
  const cudaError_t status =
      gemm::pipelined_launch<Config, gemm::Epilogue::kSwiGlu>(gate_up, max_tiles, stream);
  if (status != cudaSuccess) return status;
  return gemm::pipelined_launch<Config, gemm::Epilogue::kStore>(down, max_tiles, stream);
}

// gate_up with the fused SwiGLU, then down, on the variant's kernels.
cudaError_t launch_expert_gemms(ExpertGemm expert_gemm, const gemm::GemmArgs& gate_up,
                                const gemm::GemmArgs& down, ElementType weight_type,
                                int64_t max_tiles, cudaStream_t stream) {
  switch (expert_gemm) {
    case ExpertGemm::kWmma: {
      const cudaError_t status = gemm::launch<__nv_bfloat16, gemm::Epilogue::kSwiGlu>(
          gate_up, weight_type, max_tiles, stream);
      if (status != cudaSuccess) return status;
      return gemm::launch<__nv_bfloat16, gemm::Epilogue::kStore>(down, weight_type, max_tiles,
                                                                 stream);
    }
    case ExpertGemm::kDecode:
      return launch_pipelined<gemm::DecodeTile>(gate_up, down, max_tiles, stream);
    case ExpertGemm::kBatch:
      return launch_pipelined<gemm::BatchTile>(gate_up, down, max_tiles, stream);
    case ExpertGemm::kPrefill:
      return launch_pipelined<gemm::PrefillTile>(gate_up, down, max_tiles, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

size_t moe_experts_workspace_bytes(int64_t num_tokens, int64_t k, int64_t num_slots, int64_t hidden,
                                   int64_t intermediate) {
  // The weight type and pointers that may fall back to kWmma are not known here: room for both.
  // Either way the size grows with num_tokens, so the worst batch's warm-up covers every other.
  const int64_t num_assignments = num_tokens * k;
  const auto bytes = [&](ExpertGemm variant) {
    return carve(nullptr, num_assignments, num_slots, hidden, intermediate, tile_rows(variant))
        .bytes;
  };
  return std::max(bytes(ExpertGemm::kWmma), bytes(pipelined_gemm(num_assignments, num_slots)));
}

cudaError_t moe_experts_bf16(const MoeExpertsParams& p, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  const int64_t num_assignments = p.num_tokens * p.k;
  if (p.num_tokens == 0 || p.hidden == 0) return cudaSuccess;
  if (num_assignments > 0x7fffffff || p.num_slots <= 0) return cudaErrorInvalidValue;
  const ExpertGemm expert_gemm = choose_gemm(p, workspace);
  const int64_t tile = tile_rows(expert_gemm);
  const MoeScratch scratch = carve(static_cast<char*>(workspace), num_assignments, p.num_slots,
                                   p.hidden, p.intermediate, tile);
  if (scratch.bytes > workspace_bytes) return cudaErrorInvalidValue;
  const int64_t max_padded = max_padded_rows(num_assignments, p.num_slots, tile);
  const int64_t max_tiles = max_padded / tile;

  const size_t align_shared_bytes = 2 * static_cast<size_t>(p.num_slots) * sizeof(int32_t);
  if (align_shared_bytes > kMaxAlignSharedBytes) return cudaErrorInvalidValue;
  moe_align_kernel<<<1, kAlignThreads, align_shared_bytes, stream>>>(
      p.topk_slots, num_assignments, p.num_slots, static_cast<int32_t>(tile), max_padded, scratch);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;

  // gate_up and SwiGLU: activated[row] = silu(x W_gate^T) * (x W_up^T) for the row's slot.
  gemm::GemmArgs gate_up;
  gate_up.a = p.x;
  gate_up.lda = p.hidden;
  gate_up.a_rows = scratch.sorted_rows;
  gate_up.a_row_divisor = static_cast<int32_t>(p.k);
  gate_up.num_rows = max_padded;
  gate_up.b = p.gate_up;
  gate_up.b_group_stride = 2 * p.intermediate * p.hidden;
  gate_up.tile_groups = scratch.tile_slots;
  gate_up.num_tiles = scratch.num_tiles;
  gate_up.n = p.intermediate;
  gate_up.k = p.hidden;
  gate_up.up_offset = p.intermediate;
  gate_up.out = scratch.activated;
  gate_up.ldo = p.intermediate;

  gemm::GemmArgs down;
  down.a = scratch.activated;
  down.lda = p.intermediate;
  down.num_rows = max_padded;
  down.b = p.down;
  down.b_group_stride = p.hidden * p.intermediate;
  down.tile_groups = scratch.tile_slots;
  down.num_tiles = scratch.num_tiles;
  down.n = p.hidden;
  down.k = p.intermediate;
  down.out = scratch.expert_out;
  down.ldo = p.hidden;
  status = launch_expert_gemms(expert_gemm, gate_up, down, p.weight_type, max_tiles, stream);
  if (status != cudaSuccess) return status;

  const int64_t total = p.num_tokens * p.hidden;
  combine_kernel<<<grid_for(total, kCombineThreads), kCombineThreads, 0, stream>>>(
      scratch.expert_out, scratch.inverse, p.topk_weights, p.num_tokens, p.k, p.hidden, p.out);
  return cudaGetLastError();
}

cudaError_t moe_combine_bf16(const __nv_bfloat16* expert_out, const float* topk_weights,
                             int64_t num_tokens, int64_t k, int64_t hidden, __nv_bfloat16* out,
                             cudaStream_t stream) {
  const int64_t total = num_tokens * hidden;
  if (total == 0) return cudaSuccess;
  combine_kernel<<<grid_for(total, kCombineThreads), kCombineThreads, 0, stream>>>(
      expert_out, nullptr, topk_weights, num_tokens, k, hidden, out);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
