// Batching must not change results: every prompt gives the same tokens and bit-identical
// logprobs alone, inside a batch of mixed lengths with chunked prefill, and when the KV cache is
// so small that requests are preempted and recomputed.
#include <gtest/gtest.h>

#include "support/fixture.h"

namespace tidal {
namespace {

using testing_util::Completion;
using testing_util::ReferencePrompt;

class EngineBatching : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    loaded_ = new testing_util::LoadedModel(
        testing_util::load_cpu_model(testing_util::fixture_model_dir()));
    reference_ = new std::vector<ReferencePrompt>(testing_util::load_reference("default"));
  }
  static void TearDownTestSuite() {
    delete loaded_;
    delete reference_;
  }

  static SamplingParams params() {
    SamplingParams params;
    params.temperature = 0;
    params.max_tokens = 32;
    params.ignore_eos = true;
    params.logprobs = 5;
    return params;
  }
  static std::vector<std::vector<int32_t>> prompts() {
    std::vector<std::vector<int32_t>> all;
    for (const ReferencePrompt& prompt : *reference_) all.push_back(prompt.prompt_ids);
    return all;
  }
  std::vector<Completion> run(const EngineOptions& options,
                              const std::vector<std::vector<int32_t>>& batch,
                              int64_t* preemptions = nullptr) {
    Engine engine(*loaded_->backend, *loaded_->model, *loaded_->tokenizer, options);
    engine.warm_up();
    std::vector<Completion> completions = testing_util::run_to_completion(engine, batch, params());
    if (preemptions != nullptr) *preemptions = engine.scheduler().num_preemptions();
    EXPECT_EQ(engine.block_manager().num_free_blocks(), engine.block_manager().num_blocks())
        << "every KV block is returned once all requests finish";
    return completions;
  }
  // Alone, one request at a time: the baseline every batched run must equal bit for bit.
  std::vector<Completion> run_alone() {
    std::vector<Completion> alone;
    for (const std::vector<int32_t>& prompt : prompts()) {
      alone.push_back(run(EngineOptions{}, {prompt}).front());
    }
    return alone;
  }
  void expect_identical(const std::vector<Completion>& got, const std::vector<Completion>& alone) {
    ASSERT_EQ(got.size(), alone.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].token_ids, (*reference_)[i].greedy_ids) << "prompt " << i;
      EXPECT_EQ(got[i].token_ids, alone[i].token_ids) << "prompt " << i;
      EXPECT_EQ(got[i].text, alone[i].text) << "prompt " << i;
      ASSERT_EQ(got[i].logprobs.size(), alone[i].logprobs.size());
      for (size_t step = 0; step < got[i].logprobs.size(); ++step) {
        EXPECT_EQ(got[i].logprobs[step].top, alone[i].logprobs[step].top)
            << "prompt " << i << " step " << step << ": logprobs differ from the lone run";
      }
    }
  }

  static testing_util::LoadedModel* loaded_;
  static std::vector<ReferencePrompt>* reference_;
};

testing_util::LoadedModel* EngineBatching::loaded_ = nullptr;
std::vector<ReferencePrompt>* EngineBatching::reference_ = nullptr;

TEST_F(EngineBatching, MixedLengthsWithChunkedPrefill) {
  const std::vector<Completion> alone = run_alone();
  EngineOptions options;
  options.scheduler = {.max_num_seqs = 4, .max_num_batched_tokens = 16};  // long prompts chunk
  int64_t longest = 0;
  for (const auto& prompt : prompts())
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompt.size()));
  ASSERT_GT(longest, 16) << "the fixture needs a prompt longer than one prefill chunk";
  expect_identical(run(options, prompts()), alone);
}

TEST_F(EngineBatching, AllAtOnceInOneStep) {
  const std::vector<Completion> alone = run_alone();
  EngineOptions options;
  options.scheduler = {.max_num_seqs = 64, .max_num_batched_tokens = 2048};
  expect_identical(run(options, prompts()), alone);
}

TEST_F(EngineBatching, PreemptionByRecomputeWhenKvBlocksRunOut) {
  const std::vector<Completion> alone = run_alone();
  int64_t longest = 0;
  for (const auto& prompt : prompts())
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompt.size()));
  EngineOptions options;
  options.block_size = 4;
  // Room for the longest request alone, far from room for all of them at once.
  options.num_kv_blocks = (longest + 32 + 3) / 4 + 2;
  options.scheduler = {.max_num_seqs = 16, .max_num_batched_tokens = 64};
  int64_t preemptions = 0;
  expect_identical(run(options, prompts(), &preemptions), alone);
  EXPECT_GT(preemptions, 0) << "the KV cache was meant to run out";
}

}  // namespace
}  // namespace tidal
