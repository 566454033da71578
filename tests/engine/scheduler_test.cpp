// Scheduler and BlockManager without a model: budgets, chunked prefill, admission limits, and
// preemption order.
#include <gtest/gtest.h>

#include "engine/scheduler.h"

namespace tidal {
namespace {

std::unique_ptr<Request> make_request(const std::string& id, int64_t prompt_tokens) {
  auto request = std::make_unique<Request>();
  request->id = id;
  request->prompt_ids.assign(static_cast<size_t>(prompt_tokens), 7);
  return request;
}

// Stands in for the model: every request that completed its known tokens gets one new token.
void finish_step(Scheduler& scheduler, const std::vector<ScheduledRequest>& batch,
                 int64_t max_output = 1000) {
  for (const ScheduledRequest& entry : batch) {
    Request& request = *entry.request;
    if (request.num_computed_tokens + entry.num_new_tokens == request.num_tokens()) {
      request.output_ids.push_back(1);
      if (static_cast<int64_t>(request.output_ids.size()) >= max_output) {
        request.finish_reason = FinishReason::kLength;
      }
    }
  }
  scheduler.complete_step(batch);
}

TEST(BlockManager, AllocatesOnlyWhatIsMissingAndReleasesAll) {
  BlockManager blocks(10, 4);
  Request request;
  EXPECT_TRUE(blocks.ensure_capacity(request, 5));
  EXPECT_EQ(request.block_ids.size(), 2u);
  EXPECT_TRUE(blocks.ensure_capacity(request, 8));
  EXPECT_EQ(request.block_ids.size(), 2u);
  EXPECT_FALSE(blocks.ensure_capacity(request, 41));
  EXPECT_EQ(request.block_ids.size(), 2u) << "a failed ensure takes nothing";
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  blocks.release(request);
  EXPECT_EQ(blocks.num_free_blocks(), 10);
}

TEST(Scheduler, ChunksALongPromptWithinTheTokenBudget) {
  BlockManager blocks(100, 4);
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 10}, blocks);
  scheduler.add(make_request("long", 25));
  std::vector<int64_t> chunks;
  for (int step = 0; step < 3; ++step) {
    const auto batch = scheduler.schedule();
    ASSERT_EQ(batch.size(), 1u);
    chunks.push_back(batch[0].num_new_tokens);
    finish_step(scheduler, batch);
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{10, 10, 5}));
  const auto decode = scheduler.schedule();
  ASSERT_EQ(decode.size(), 1u);
  EXPECT_EQ(decode[0].num_new_tokens, 1) << "after the prompt, one token per step";
}

TEST(Scheduler, RespectsMaxNumSeqsAndDecodesFirst) {
  BlockManager blocks(100, 4);
  Scheduler scheduler({.max_num_seqs = 2, .max_num_batched_tokens = 100}, blocks);
  for (const char* id : {"r0", "r1", "r2"}) scheduler.add(make_request(id, 3));
  auto batch = scheduler.schedule();
  EXPECT_EQ(batch.size(), 2u);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  finish_step(scheduler, batch, 1);  // both finish after one token
  batch = scheduler.schedule();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].request->id, "r2");
}

TEST(Scheduler, PreemptsTheNewestRequestWhenBlocksRunOut) {
  BlockManager blocks(4, 4);  // 16 token slots
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 100}, blocks);
  scheduler.add(make_request("old", 7));
  scheduler.add(make_request("new", 7));
  auto batch = scheduler.schedule();
  ASSERT_EQ(batch.size(), 2u);  // 2 blocks each
  finish_step(scheduler, batch);
  batch = scheduler.schedule();  // the 8th token of each still fits in its 2 blocks
  ASSERT_EQ(batch.size(), 2u);
  finish_step(scheduler, batch);
  // Both now hold 8 tokens in 2 full blocks and need a third: only one can have it.
  batch = scheduler.schedule();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].request->id, "old");
  EXPECT_EQ(scheduler.num_preemptions(), 1);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  finish_step(scheduler, batch);
  // The preempted request keeps its tokens and is recomputed from scratch once it fits.
  auto removed = scheduler.remove("old");
  ASSERT_NE(removed, nullptr);
  batch = scheduler.schedule();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].request->id, "new");
  EXPECT_EQ(batch[0].request->num_computed_tokens, 0);
  EXPECT_EQ(batch[0].num_new_tokens, 9) << "prompt plus its two output tokens";
}

// Admission delay: arrivals into a running decode batch wait, then join in one step.
TEST(Scheduler, ArrivalsIntoADecodeBatchJoinTogetherAfterTheDelay) {
  BlockManager blocks(100, 4);
  Scheduler scheduler(
      {.max_num_seqs = 8, .max_num_batched_tokens = 100, .max_admission_delay_steps = 4}, blocks);
  scheduler.add(make_request("running", 3));
  auto batch = scheduler.schedule();
  ASSERT_EQ(batch.size(), 1u) << "nothing runs yet: admitted at once";
  finish_step(scheduler, batch);
  scheduler.add(make_request("a", 3));
  std::vector<size_t> sizes;
  for (int step = 0; step < 5; ++step) {
    if (step == 1) scheduler.add(make_request("b", 3));
    batch = scheduler.schedule();
    sizes.push_back(batch.size());
    finish_step(scheduler, batch);
  }
  // "a" joined the queue before step 0 and waits 4 steps; "b" joins with it.
  EXPECT_EQ(sizes, (std::vector<size_t>{1, 1, 1, 3, 3}));
}

TEST(Scheduler, ArrivalsJoinAtOnceWhenTheStepHasPromptTokensAnyway) {
  BlockManager blocks(100, 4);
  Scheduler scheduler(
      {.max_num_seqs = 8, .max_num_batched_tokens = 10, .max_admission_delay_steps = 8}, blocks);
  scheduler.add(make_request("long", 25));
  auto batch = scheduler.schedule();  // its first chunk of 10
  finish_step(scheduler, batch);
  scheduler.add(make_request("short", 3));
  batch = scheduler.schedule();  // the long prompt's second chunk takes the whole budget
  ASSERT_EQ(batch.size(), 1u);
  finish_step(scheduler, batch);
  batch = scheduler.schedule();  // its last 5 tokens: a prefill step, so "short" joins it
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[1].request->id, "short");
}

TEST(Scheduler, ArrivalsFillingHalfTheBudgetJoinAtOnce) {
  BlockManager blocks(100, 4);
  Scheduler scheduler(
      {.max_num_seqs = 8, .max_num_batched_tokens = 20, .max_admission_delay_steps = 100}, blocks);
  scheduler.add(make_request("running", 3));
  auto batch = scheduler.schedule();
  finish_step(scheduler, batch);
  scheduler.add(make_request("a", 4));
  batch = scheduler.schedule();
  EXPECT_EQ(batch.size(), 1u) << "4 waiting tokens of a budget of 20: it waits";
  finish_step(scheduler, batch);
  scheduler.add(make_request("b", 6));
  batch = scheduler.schedule();
  EXPECT_EQ(batch.size(), 3u) << "10 waiting tokens, half the budget: both join";
}

}  // namespace
}  // namespace tidal
