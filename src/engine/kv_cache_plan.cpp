// KV cache sizing: the plan from the options and the device's memory, the model length it allows,
// and the words that report both.
#include "engine/kv_cache_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"

namespace tidal {
namespace {

int64_t blocks_for(int64_t tokens, int64_t block_size) {
  return (tokens + block_size - 1) / block_size;
}

// How to make the cache hold `tokens`, in the terms of the flag that sized it.
std::string what_would_fit(const KvCachePlan& plan, int64_t tokens) {
  const int64_t blocks = blocks_for(tokens, plan.block_size);
  const size_t bytes = static_cast<size_t>(blocks) * plan.bytes_per_block;
  switch (plan.source) {
    case KvCacheSource::kNumBlocks:
      return cat("--num-kv-blocks ", blocks, " would hold it");
    case KvCacheSource::kBytes:
      return cat("--kv-cache-memory ", bytes, " (", format_bytes(bytes), ") would hold it");
    case KvCacheSource::kCpuSpace:
      return cat("--cpu-kvcache-space ", bytes, " (", format_bytes(bytes), ") would hold it");
    case KvCacheSource::kDeviceMemory: {
      const size_t missing = bytes > plan.budget_bytes ? bytes - plan.budget_bytes : 0;
      std::string fix = cat("it needs ", format_bytes(bytes), ", ", format_bytes(missing),
                            " more than --gpu-memory-utilization ", plan.utilization, " leaves");
      if (plan.device_total_bytes > 0) {
        const double needed = plan.utilization + static_cast<double>(missing) /
                                                     static_cast<double>(plan.device_total_bytes);
        // Rounded up to the hundredth, so the suggestion is enough.
        const double suggestion = std::ceil(needed * 100.0) / 100.0;
        if (suggestion <= 1.0) {
          fix += cat(" (--gpu-memory-utilization ", suggestion, " would hold it)");
        } else {
          fix +=
              " (more than the whole device: lower --max-num-seqs or "
              "--max-num-batched-tokens, or use more ranks)";
        }
      }
      return fix;
    }
  }
  return "";
}

}  // namespace

const char* kv_cache_source_flag(KvCacheSource source) {
  switch (source) {
    case KvCacheSource::kNumBlocks:
      return "--num-kv-blocks";
    case KvCacheSource::kBytes:
      return "--kv-cache-memory";
    case KvCacheSource::kCpuSpace:
      return "--cpu-kvcache-space";
    case KvCacheSource::kDeviceMemory:
      return "--gpu-memory-utilization";
  }
  return "";
}

std::string format_bytes(size_t bytes) {
  char text[32];
  if (bytes >= (size_t{1} << 30)) {
    std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  } else if (bytes >= (size_t{1} << 20)) {
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else if (bytes >= (size_t{1} << 10)) {
    std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  } else {
    std::snprintf(text, sizeof text, "%zu B", bytes);
  }
  return text;
}

bool sized_from_device_memory(const KvCacheSizing& sizing, DeviceKind device) {
  return sizing.num_blocks <= 0 && sizing.bytes == 0 &&
         (device != DeviceKind::kCpu || sizing.cpu_kvcache_space == 0);
}

size_t device_memory_budget(double utilization, const MemoryInfo& memory, size_t reserve_bytes) {
  const auto allowed = static_cast<double>(memory.total_bytes) * utilization;
  const auto in_use =
      static_cast<double>(memory.total_bytes - std::min(memory.free_bytes, memory.total_bytes));
  const double left = allowed - in_use - static_cast<double>(reserve_bytes);
  // Never more than is free: a utilization above what other processes left cannot be had.
  return left <= 0 ? 0 : std::min(static_cast<size_t>(left), memory.free_bytes);
}

KvCachePlan plan_kv_cache(const KvCacheSizing& sizing, DeviceKind device, int64_t block_size,
                          size_t bytes_per_block, const MemoryInfo& memory, size_t reserve_bytes) {
  TIDAL_CHECK(block_size > 0 && bytes_per_block > 0, "KV cache blocks of ", block_size,
              " tokens and ", bytes_per_block, " bytes");
  KvCachePlan plan{.num_blocks = 0,
                   .block_size = block_size,
                   .bytes_per_block = bytes_per_block,
                   .budget_bytes = 0,
                   .source = KvCacheSource::kNumBlocks,
                   .utilization = sizing.gpu_memory_utilization,
                   .device_total_bytes = memory.total_bytes};
  if (sizing.num_blocks > 0) {
    plan.num_blocks = sizing.num_blocks;
    plan.budget_bytes = plan.bytes();
    return plan;
  }
  if (sizing.bytes > 0) {
    plan.source = KvCacheSource::kBytes;
    plan.budget_bytes = sizing.bytes;
  } else if (!sized_from_device_memory(sizing, device)) {
    plan.source = KvCacheSource::kCpuSpace;
    plan.budget_bytes = sizing.cpu_kvcache_space;
  } else {
    TIDAL_CHECK(sizing.gpu_memory_utilization > 0 && sizing.gpu_memory_utilization <= 1,
                "--gpu-memory-utilization must be in (0, 1], got ", sizing.gpu_memory_utilization);
    plan.source = KvCacheSource::kDeviceMemory;
    plan.budget_bytes = device_memory_budget(sizing.gpu_memory_utilization, memory, reserve_bytes);
  }
  plan.num_blocks = static_cast<int64_t>(plan.budget_bytes / bytes_per_block);
  if (plan.num_blocks <= 0) {
    if (plan.source == KvCacheSource::kDeviceMemory) {
      TIDAL_FAIL("no room for a KV cache: --gpu-memory-utilization ", sizing.gpu_memory_utilization,
                 " of ", format_bytes(memory.total_bytes), " leaves ",
                 format_bytes(plan.budget_bytes), " after the ",
                 format_bytes(memory.total_bytes - std::min(memory.free_bytes, memory.total_bytes)),
                 " in use (weights, workspace) and a reserve of ", format_bytes(reserve_bytes),
                 ", and one block of ", block_size, " tokens takes ", format_bytes(bytes_per_block),
                 ": raise --gpu-memory-utilization, lower --max-num-seqs or "
                 "--max-num-batched-tokens, or use more ranks");
    }
    TIDAL_FAIL(kv_cache_source_flag(plan.source), " ", plan.budget_bytes,
               " holds no KV cache block of ", block_size, " tokens (", bytes_per_block, " bytes)");
  }
  return plan;
}

int64_t resolve_max_model_len(int64_t requested, int64_t max_position_embeddings,
                              const KvCachePlan& plan) {
  const int64_t capacity = plan.capacity_tokens();
  if (requested <= 0) return std::min(max_position_embeddings, capacity);
  if (requested > max_position_embeddings) {
    TIDAL_FAIL("--max-model-len ", requested, " exceeds the model's max_position_embeddings (",
               max_position_embeddings, ")");
  }
  if (requested > capacity) {
    TIDAL_FAIL("--max-model-len ", requested, " does not fit one rank's KV cache of ", capacity,
               " tokens (", plan.num_blocks, " blocks of ", plan.block_size, ", ",
               format_bytes(plan.bytes()), " from ", kv_cache_source_flag(plan.source), "); ",
               what_would_fit(plan, requested), ", or lower --max-model-len to ", capacity);
  }
  return requested;
}

double kv_cache_max_concurrency(const KvCachePlan& plan, int64_t max_model_len) {
  if (max_model_len <= 0) return 0;
  return static_cast<double>(plan.capacity_tokens()) / static_cast<double>(max_model_len);
}

std::string describe_kv_cache(const KvCachePlan& plan, int64_t max_model_len) {
  char concurrency[32];
  std::snprintf(concurrency, sizeof concurrency, "%.2f",
                kv_cache_max_concurrency(plan, max_model_len));
  std::string from = kv_cache_source_flag(plan.source);
  if (plan.source == KvCacheSource::kDeviceMemory) {
    from += cat(" ", plan.utilization, " of ", format_bytes(plan.device_total_bytes));
  } else if (plan.source != KvCacheSource::kNumBlocks) {
    from += cat(" ", format_bytes(plan.budget_bytes));
  }
  return cat("KV cache: ", plan.num_blocks, " blocks of ", plan.block_size,
             " tokens = ", plan.capacity_tokens(), " tokens (", format_bytes(plan.bytes()),
             ", from ", from, "), ", concurrency, " concurrent requests of max_model_len ",
             max_model_len);
}

}  // namespace tidal
