// How many KV cache blocks a rank gets: an explicit count or size, the CPU's KV cache budget, or
// what is left of a GPU's memory; and the longest request that cache lets the rank serve. Pure
// functions of their inputs, so tests check them exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace tidal {

// The sizing options of one rank's KV cache (EngineOptions holds them, flags set them).
struct KvCacheSizing {
  int64_t num_blocks = 0;  // --num-kv-blocks: exactly this many
  size_t bytes = 0;        // --kv-cache-memory: this many bytes' worth of blocks
  // --gpu-memory-utilization: the share of a GPU's memory this rank may hold in all (weights,
  // workspace, graphs, KV cache); the KV cache gets what the rest leaves of it.
  double gpu_memory_utilization = 0.9;
  // --cpu-kvcache-space: the KV cache's bytes on a CPU rank; 0: cut from the host's memory as
  // on a GPU (gpu_memory_utilization of it).
  size_t cpu_kvcache_space = 0;
};

enum class KvCacheSource { kNumBlocks, kBytes, kCpuSpace, kDeviceMemory };

// The flag a user changes to change the size, e.g. "--cpu-kvcache-space".
const char* kv_cache_source_flag(KvCacheSource source);

struct KvCachePlan {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  size_t bytes_per_block = 0;
  size_t budget_bytes = 0;  // the bytes the blocks were cut from (num_blocks: their own size)
  KvCacheSource source = KvCacheSource::kNumBlocks;
  // The device's, for the words of a refusal (what utilization would fit) and the log line.
  double utilization = 0;
  size_t device_total_bytes = 0;

  int64_t capacity_tokens() const { return num_blocks * block_size; }
  size_t bytes() const { return static_cast<size_t>(num_blocks) * bytes_per_block; }
};

// Whether the size is cut from the device's free memory (a GPU without --num-kv-blocks or
// --kv-cache-memory, or a CPU with --cpu-kvcache-space 0): only known once the weights are loaded
// and the worst-case step has run.
bool sized_from_device_memory(const KvCacheSizing& sizing, DeviceKind device);

// What --gpu-memory-utilization leaves for the KV cache: utilization x total, less what is in use
// now (total - free), less `reserve_bytes` for what is still to be allocated; 0 when nothing is.
size_t device_memory_budget(double utilization, const MemoryInfo& memory, size_t reserve_bytes);

// The plan for `sizing` on `device`; `memory` and `reserve_bytes` matter only when the size comes
// from device memory. Throws tidal::Error, naming the budget and what one block takes, when the
// budget holds no block.
KvCachePlan plan_kv_cache(const KvCacheSizing& sizing, DeviceKind device, int64_t block_size,
                          size_t bytes_per_block, const MemoryInfo& memory, size_t reserve_bytes);

// The longest request (prompt + output) a rank serves: min(max_position_embeddings, capacity),
// or `requested` (> 0) when it is within both. A requested length past the capacity throws
// tidal::Error naming the capacity in tokens and the budget that would hold it.
int64_t resolve_max_model_len(int64_t requested, int64_t max_position_embeddings,
                              const KvCachePlan& plan);

// Requests of max_model_len tokens the cache holds at once.
double kv_cache_max_concurrency(const KvCachePlan& plan, int64_t max_model_len);

// "KV cache: N blocks of B tokens = T tokens (X GiB, from --flag ...), Y concurrent requests of
// max_model_len L": the start-up line of every rank.
std::string describe_kv_cache(const KvCachePlan& plan, int64_t max_model_len);

// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(size_t bytes);

}  // namespace tidal
