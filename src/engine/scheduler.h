// Continuous batching: each step, running requests first (decode or the next prefill chunk),
// then waiting ones, within max_num_seqs and max_num_batched_tokens; when KV blocks run out the
// newest running request is preempted and later recomputed from its tokens.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "engine/block_manager.h"
#include "engine/request.h"

namespace tidal {

struct SchedulerOptions {
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 512;
  // Steps a waiting request may wait so that arrivals into a running decode batch are prefilled
  // together (see Scheduler::admits_now); 0 admits at once. -1: the engine chooses
  // (kDefaultAdmissionDelaySteps when it replays decode graphs, else 0).
  int64_t max_admission_delay_steps = -1;
};

// A step with prompt tokens runs eagerly (decode graphs hold decode-only steps) and, at large
// batches, costs about two decode steps (H100, Qwen3-30B-A3B shapes, 48 layers, 2026-12-07:
// 58 ms against 29 ms at batch 251). Admitting each arrival at once made those steps take a
// third of the time at 256 and 512 clients; admitting them together every few steps makes it
// a few percent, for a few steps more of time to first token.
constexpr int64_t kDefaultAdmissionDelaySteps = 8;

struct ScheduledRequest {
  Request* request = nullptr;
  int64_t num_new_tokens = 0;  // tokens from num_computed_tokens on, run this step
};

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, BlockManager& blocks);

  void add(std::unique_ptr<Request> request);
  // The batch of this step (empty when there is nothing to run).
  std::vector<ScheduledRequest> schedule();
  // Records that the scheduled tokens ran; removes finished requests and returns them.
  std::vector<std::unique_ptr<Request>> complete_step(const std::vector<ScheduledRequest>& batch);
  // Removes a request wherever it is; returns it (nullptr when unknown).
  std::unique_ptr<Request> remove(const std::string& request_id);
  // Removes every request, running ones first in admission order, then waiting ones.
  std::vector<std::unique_ptr<Request>> remove_all();

  // Sets max_admission_delay_steps (>= 0).
  void set_max_admission_delay(int64_t steps);
  int64_t max_admission_delay() const { return options_.max_admission_delay_steps; }

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  void preempt(std::unique_ptr<Request> request);
  // Whether waiting requests join this step: at once when nothing runs, when the step has prompt
  // tokens anyway, after a preemption (those requests already waited), when the oldest waiting
  // request has waited max_admission_delay_steps steps, or when the waiting prompts would fill
  // half the token budget.
  bool admits_now(const std::vector<ScheduledRequest>& batch) const;

  SchedulerOptions options_;
  BlockManager* blocks_;
  std::deque<std::unique_ptr<Request>> waiting_;
  std::vector<std::unique_ptr<Request>>
      running_;  // in admission order; the last is preempted first
  int64_t num_preemptions_ = 0;
  int64_t num_steps_ = 0;  // schedule() calls so far
};

}  // namespace tidal
