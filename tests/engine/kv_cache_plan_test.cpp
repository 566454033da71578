// KV cache sizing as pure functions: which option wins, the blocks a budget holds, what a GPU's
// memory leaves, and the max_model_len a cache allows (with the refusal's words).
#include "engine/kv_cache_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;

constexpr size_t kGiB = size_t{1} << 30;
constexpr size_t kMiB = size_t{1} << 20;
constexpr int64_t kBlockSize = 16;
constexpr size_t kPerBlock = 3 * kMiB;  // an odd size, so budgets leave remainders

KvCachePlan plan(const KvCacheSizing& sizing, DeviceKind device, MemoryInfo memory = {},
                 size_t reserve = 0) {
  return plan_kv_cache(sizing, device, kBlockSize, kPerBlock, memory, reserve);
}

TEST(KvCachePlan, NumBlocksWinsOverEverySize) {
  const KvCachePlan got = plan({.num_blocks = 7, .bytes = kGiB, .cpu_kvcache_space = kGiB},
                               DeviceKind::kCuda, {.total_bytes = 80 * kGiB, .free_bytes = kGiB});
  EXPECT_EQ(got.num_blocks, 7);
  EXPECT_EQ(got.source, KvCacheSource::kNumBlocks);
  EXPECT_EQ(got.capacity_tokens(), 7 * kBlockSize);
  EXPECT_EQ(got.bytes(), 7 * kPerBlock);
}

TEST(KvCachePlan, KvCacheMemoryWinsOverTheBudgets) {
  for (const DeviceKind device : {DeviceKind::kCpu, DeviceKind::kCuda}) {
    const KvCachePlan got = plan({.bytes = 100 * kMiB, .cpu_kvcache_space = kGiB}, device,
                                 {.total_bytes = 80 * kGiB, .free_bytes = 70 * kGiB});
    EXPECT_EQ(got.source, KvCacheSource::kBytes);
    EXPECT_EQ(got.num_blocks, 33);  // 100 / 3, rounded down
  }
}

TEST(KvCachePlan, CpuBlocksAreTheSpaceOverTheBlockSizeWhateverTheMemory) {
  const KvCacheSizing sizing{.cpu_kvcache_space = 512 * kMiB};
  const KvCachePlan got = plan(sizing, DeviceKind::kCpu, {.total_bytes = kGiB, .free_bytes = 0});
  EXPECT_EQ(got.source, KvCacheSource::kCpuSpace);
  EXPECT_EQ(got.num_blocks, static_cast<int64_t>(512 * kMiB / kPerBlock));
  EXPECT_EQ(got.budget_bytes, 512 * kMiB);
  EXPECT_FALSE(sized_from_device_memory(sizing, DeviceKind::kCpu));
  EXPECT_TRUE(sized_from_device_memory({.cpu_kvcache_space = 0}, DeviceKind::kCpu));
}

TEST(KvCachePlan, GpuGetsWhatUtilizationLeavesAfterUseAndReserve) {
  // 0.9 x 80 GiB = 72 GiB allowed; 61 GiB in use; 1 GiB reserved: 10 GiB for the cache.
  const MemoryInfo memory{.total_bytes = 80 * kGiB, .free_bytes = 19 * kGiB};
  const KvCacheSizing sizing{.gpu_memory_utilization = 0.9};
  EXPECT_TRUE(sized_from_device_memory(sizing, DeviceKind::kCuda));
  const KvCachePlan got = plan(sizing, DeviceKind::kCuda, memory, kGiB);
  EXPECT_EQ(got.source, KvCacheSource::kDeviceMemory);
  const auto budget = static_cast<size_t>(0.9 * static_cast<double>(80 * kGiB)) - 61 * kGiB - kGiB;
  EXPECT_EQ(got.budget_bytes, budget);
  EXPECT_EQ(got.num_blocks, static_cast<int64_t>(budget / kPerBlock));
  EXPECT_EQ(got.device_total_bytes, 80 * kGiB);
}

TEST(KvCachePlan, DeviceBudgetNeverExceedsFreeMemory) {
  // Another process took most of the device: utilization cannot hand out what is not free.
  EXPECT_EQ(device_memory_budget(1.0, {.total_bytes = 80 * kGiB, .free_bytes = 5 * kGiB}, 0),
            5 * kGiB);
  EXPECT_EQ(device_memory_budget(0.5, {.total_bytes = 80 * kGiB, .free_bytes = 30 * kGiB}, 0), 0u);
}

TEST(KvCachePlan, NoRoomForABlockIsRefusedWithTheNumbers) {
  try {
    plan({.gpu_memory_utilization = 0.9}, DeviceKind::kCuda,
         {.total_bytes = 80 * kGiB, .free_bytes = 8 * kGiB}, 0);
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("no room for a KV cache"));
    EXPECT_THAT(error.what(), HasSubstr("--gpu-memory-utilization 0.9"));
  }
  EXPECT_THROW(plan({.cpu_kvcache_space = kMiB}, DeviceKind::kCpu), Error);
  EXPECT_THROW(plan({.gpu_memory_utilization = 1.5}, DeviceKind::kCuda,
                    {.total_bytes = kGiB, .free_bytes = kGiB}),
               Error);
}

TEST(KvCachePlan, MaxModelLenIsTheSmallerOfModelAndCapacity) {
  const KvCachePlan small = plan({.num_blocks = 10}, DeviceKind::kCpu);  // 160 tokens
  EXPECT_EQ(resolve_max_model_len(0, 2048, small), 160);
  const KvCachePlan large = plan({.num_blocks = 1000}, DeviceKind::kCpu);
  EXPECT_EQ(resolve_max_model_len(0, 2048, large), 2048);
  EXPECT_EQ(resolve_max_model_len(100, 2048, small), 100);
  EXPECT_EQ(resolve_max_model_len(160, 2048, small), 160);
  EXPECT_THROW(resolve_max_model_len(4096, 2048, large), Error);
}

TEST(KvCachePlan, TooLongAMaxModelLenNamesTheCapacityAndTheBudgetThatFits) {
  // 40 blocks of 16 = 640 tokens; 1000 tokens need 63 blocks = 189 MiB.
  const KvCachePlan cpu = plan({.cpu_kvcache_space = 120 * kMiB}, DeviceKind::kCpu);
  ASSERT_EQ(cpu.capacity_tokens(), 640);
  try {
    resolve_max_model_len(1000, 2048, cpu);
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("--max-model-len 1000"));
    EXPECT_THAT(error.what(), HasSubstr("640 tokens"));
    EXPECT_THAT(error.what(), HasSubstr(cat("--cpu-kvcache-space ", 63 * kPerBlock)));
  }
  const KvCachePlan gpu = plan({.gpu_memory_utilization = 0.5}, DeviceKind::kCuda,
                               {.total_bytes = 100 * kGiB, .free_bytes = 100 * kGiB}, 0);
  try {
    resolve_max_model_len(2048, 1 << 20, gpu);
  } catch (...) {
    FAIL() << "50 GiB hold 2048 tokens";
  }
  const KvCachePlan tight =
      plan({.gpu_memory_utilization = 0.5}, DeviceKind::kCuda,
           {.total_bytes = 100 * kGiB, .free_bytes = 51 * kGiB}, 0);  // 1 GiB: 341 blocks
  try {
    resolve_max_model_len(16 * 1000, 1 << 20, tight);  // 1000 blocks: 3000 MiB
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("--gpu-memory-utilization 0.52 would hold it"));
  }
}

TEST(KvCachePlan, ConcurrencyAndTheStartUpLine) {
  const KvCachePlan got = plan({.num_blocks = 227}, DeviceKind::kCuda);
  EXPECT_DOUBLE_EQ(kv_cache_max_concurrency(got, 1816), 2.0);
  EXPECT_EQ(describe_kv_cache(got, 1816),
            "KV cache: 227 blocks of 16 tokens = 3632 tokens (681.0 MiB, from --num-kv-blocks), "
            "2.00 concurrent requests of max_model_len 1816");
  EXPECT_EQ(format_bytes(3 * kGiB / 2), "1.50 GiB");
  EXPECT_EQ(format_bytes(512), "512 B");
}

}  // namespace
}  // namespace tidal
