// The engine's KV cache on the tiny model: sized from the CPU budget at construction, refused
// when --max-model-len does not fit, and cut from device memory after the worst-case step (on a
// CPU backend that acts as a device of fixed size), with the same greedy tokens either way.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "model/load_model.h"
#include "support/fixture.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;
using testing_util::Completion;

constexpr size_t kMiB = size_t{1} << 20;

class EngineKvSizing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    loaded_ = new testing_util::LoadedModel(
        testing_util::load_cpu_model(testing_util::fixture_model_dir()));
  }
  static void TearDownTestSuite() { delete loaded_; }

  static size_t bytes_per_block(int64_t block_size) {
    return KvCache::bytes_per_block(loaded_->model->config(), block_size, DType::kF32);
  }
  static SamplingParams greedy(int64_t max_tokens) {
    SamplingParams params;
    params.temperature = 0;
    params.max_tokens = max_tokens;
    params.ignore_eos = true;
    return params;
  }
  static std::vector<std::vector<int32_t>> prompts() {
    return {loaded_->tokenizer->encode("The quick brown fox"),
            loaded_->tokenizer->encode("Tides rise and fall")};
  }

  static testing_util::LoadedModel* loaded_;
};

testing_util::LoadedModel* EngineKvSizing::loaded_ = nullptr;

TEST_F(EngineKvSizing, DefaultCpuCacheIsTheBudgetOverTheBlockBytes) {
  Engine engine(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, EngineOptions{});
  const int64_t blocks = static_cast<int64_t>(kDefaultCpuKvCacheSpace / bytes_per_block(16));
  EXPECT_TRUE(engine.kv_sized());
  EXPECT_EQ(engine.kv_plan().source, KvCacheSource::kCpuSpace);
  EXPECT_EQ(engine.kv_plan().num_blocks, blocks);
  EXPECT_EQ(engine.block_manager().num_blocks(), blocks);
  EXPECT_EQ(engine.max_model_len(),
            std::min(loaded_->model->config().max_position_embeddings, blocks * 16));
}

TEST_F(EngineKvSizing, CpuSpaceAndBlockSizeSetTheCapacity) {
  EngineOptions options;
  options.block_size = 8;
  options.cpu_kvcache_space = 3 * kMiB + 5;
  Engine engine(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, options);
  EXPECT_EQ(engine.kv_plan().capacity_tokens(),
            static_cast<int64_t>((3 * kMiB + 5) / bytes_per_block(8)) * 8);
}

TEST_F(EngineKvSizing, OverridesWinOverTheBudget) {
  EngineOptions options;
  options.kv_cache_bytes = 2 * kMiB;
  Engine by_bytes(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, options);
  EXPECT_EQ(by_bytes.kv_plan().source, KvCacheSource::kBytes);
  EXPECT_EQ(by_bytes.kv_plan().num_blocks, static_cast<int64_t>(2 * kMiB / bytes_per_block(16)));
  options.num_kv_blocks = 5;
  Engine by_blocks(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, options);
  EXPECT_EQ(by_blocks.kv_plan().num_blocks, 5);
  EXPECT_EQ(by_blocks.max_model_len(), 80);
}

TEST_F(EngineKvSizing, MaxModelLenPastTheCacheIsRefusedWithWhatWouldFit) {
  EngineOptions options;
  options.cpu_kvcache_space = kMiB;  // 1024 tokens of the tiny model
  options.max_model_len = 2048;
  try {
    Engine engine(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, options);
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    const int64_t capacity = static_cast<int64_t>(kMiB / bytes_per_block(16)) * 16;
    EXPECT_THAT(error.what(), HasSubstr(cat("one rank's KV cache of ", capacity, " tokens")));
    EXPECT_THAT(error.what(), HasSubstr(cat("--cpu-kvcache-space ", 2048 / 16 * bytes_per_block(16),
                                            " (2.0 MiB) would hold it")));
  }
}

// The order a GPU runs: weights, the worst case on a one-block placeholder, then the cache from
// what is left, then graphs. A CPU backend of fixed size counts every allocation, so the cache
// must be exactly what utilization leaves after everything else.
TEST_F(EngineKvSizing, CacheFromDeviceMemoryIsWhatTheWarmUpLeaves) {
  constexpr size_t kLimit = 256 * kMiB;
  CpuBackend device({.memory_limit_bytes = kLimit});
  const std::unique_ptr<CausalLm> model =
      load_model(testing_util::fixture_model_dir(), device);
  EngineOptions options;
  options.cpu_kvcache_space = 0;  // as on a GPU
  options.gpu_memory_utilization = 0.5;
  Engine engine(device, *model, *loaded_->tokenizer, options);
  EXPECT_FALSE(engine.kv_sized());
  EXPECT_EQ(engine.block_manager().num_blocks(), 1);
  engine.warm_up();
  ASSERT_TRUE(engine.kv_sized());
  const KvCachePlan& plan = engine.kv_plan();
  EXPECT_EQ(plan.source, KvCacheSource::kDeviceMemory);
  EXPECT_EQ(engine.block_manager().num_blocks(), plan.num_blocks);
  // Everything but the cache, as it stood when the cache was sized (nothing was allocated since).
  const MemoryInfo memory = device.memory_info();
  const size_t others = kLimit - memory.free_bytes - plan.bytes();
  const auto allowed = static_cast<size_t>(0.5 * static_cast<double>(kLimit));
  ASSERT_GT(allowed, others);
  EXPECT_EQ(plan.num_blocks, static_cast<int64_t>((allowed - others) / bytes_per_block(16)));
  EXPECT_EQ(engine.max_model_len(), loaded_->model->config().max_position_embeddings);

  // The same greedy tokens as the budget-sized engine.
  Engine reference(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, EngineOptions{});
  reference.warm_up();
  const std::vector<Completion> want =
      testing_util::run_to_completion(reference, prompts(), greedy(12));
  const std::vector<Completion> got =
      testing_util::run_to_completion(engine, prompts(), greedy(12));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].token_ids, want[i].token_ids);
  // A second warm-up (an elastic transition's) keeps the cache as it is.
  engine.warm_up();
  EXPECT_EQ(engine.kv_plan().num_blocks, plan.num_blocks);
}

TEST_F(EngineKvSizing, NoRoomLeftForTheCacheIsRefusedNotOutOfMemory) {
  CpuBackend device({.memory_limit_bytes = 256 * kMiB});
  const std::unique_ptr<CausalLm> model =
      load_model(testing_util::fixture_model_dir(), device);
  EngineOptions options;
  options.cpu_kvcache_space = 0;
  options.gpu_memory_utilization = 0.0001;  // 26 KiB: less than the workspace
  Engine engine(device, *model, *loaded_->tokenizer, options);
  try {
    engine.warm_up();
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("no room for a KV cache"));
  }
}

TEST_F(EngineKvSizing, RequestedLengthIsCheckedOnceTheDeviceCacheIsSized) {
  CpuBackend device({.memory_limit_bytes = 64 * kMiB});
  const std::unique_ptr<CausalLm> model =
      load_model(testing_util::fixture_model_dir(), device);
  EngineOptions options;
  options.cpu_kvcache_space = 0;
  options.gpu_memory_utilization = 0.9;
  options.max_model_len = 2048;
  options.block_size = 16;
  // Find how much the step leaves, then ask for a utilization that holds fewer than 2048 tokens.
  size_t others = 0;
  {
    Engine probe(device, *model, *loaded_->tokenizer, options);
    probe.warm_up();
    others = 64 * kMiB - device.memory_info().free_bytes - probe.kv_plan().bytes();
  }
  const double tight =
      (static_cast<double>(others) + static_cast<double>(100 * bytes_per_block(16))) /
      static_cast<double>(64 * kMiB);
  options.gpu_memory_utilization = tight;
  Engine engine(device, *model, *loaded_->tokenizer, options);
  try {
    engine.warm_up();
    FAIL() << "expected a refusal";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("--max-model-len 2048 does not fit"));
    EXPECT_THAT(error.what(), HasSubstr("--gpu-memory-utilization"));
  }
}

// Requests handed over to a rank whose cache is full wait there (or are preempted), and finish
// exactly as they would have: a small cache refuses none that fits max_model_len.
TEST_F(EngineKvSizing, HandedOverRequestsWaitForRoomInAFullCache) {
  const std::vector<std::string> texts = {"The quick brown fox", "Tides rise and fall",
                                          "Once upon a time",    "A B C D",
                                          "Hello there",         "Numbers: 1 2 3"};
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& text : texts) prompts.push_back(loaded_->tokenizer->encode(text));
  Engine reference(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, EngineOptions{});
  reference.warm_up();
  const std::vector<Completion> want =
      testing_util::run_to_completion(reference, prompts, greedy(20));

  Engine first(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, EngineOptions{});
  first.warm_up();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(first.add_request(cat("r", i), prompts[i], greedy(20)).is_ok());
  }
  std::map<std::string, std::vector<int32_t>> got;
  const auto collect = [&](const std::vector<RequestOutput>& outputs) {
    for (const RequestOutput& output : outputs) {
      std::vector<int32_t>& ids = got[output.request_id];
      ids.insert(ids.end(), output.new_token_ids.begin(), output.new_token_ids.end());
      if (output.finished()) {
        EXPECT_EQ(output.finish_reason, FinishReason::kLength);
      }
    }
  };
  for (int step = 0; step < 6; ++step) collect(first.step());

  // Six blocks (96 tokens): each request (at most 32 tokens, two blocks) fits alone, not all
  // at once.
  EngineOptions small;
  small.num_kv_blocks = 6;
  Engine second(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, small);
  second.warm_up();
  ASSERT_EQ(second.max_model_len(), 96);
  for (RequestHandoff& handoff : first.release_all()) {
    ASSERT_LE(static_cast<int64_t>(handoff.prompt_ids.size()) + 20, 32);
    ASSERT_TRUE(second.adopt(std::move(handoff)).is_ok());
  }
  EXPECT_GT(second.scheduler().num_waiting(), 0);
  for (int step = 0; step < 2000 && second.has_work(); ++step) collect(second.step());
  EXPECT_FALSE(second.has_work());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got[cat("r", i)], want[i].token_ids) << "request " << i;
  }
}

}  // namespace
}  // namespace tidal
