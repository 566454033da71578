// The continuous-batching scheduler with chunked prefill and preemption by recompute.
#include "engine/scheduler.h"

#include <algorithm>

#include "common/error.h"
#include "common/logging.h"

namespace tidal {

Scheduler::Scheduler(SchedulerOptions options, BlockManager& blocks)
    : options_(options), blocks_(&blocks) {
  TIDAL_CHECK(options_.max_num_seqs > 0 && options_.max_num_batched_tokens > 0,
              "max_num_seqs and max_num_batched_tokens must be positive");
}

void Scheduler::add(std::unique_ptr<Request> request) {
  request->enqueued_step = num_steps_;
  waiting_.push_back(std::move(request));
}

void Scheduler::set_max_admission_delay(int64_t steps) {
  TIDAL_CHECK(steps >= 0, "max_admission_delay_steps must not be negative, got ", steps);
  options_.max_admission_delay_steps = steps;
}

bool Scheduler::admits_now(const std::vector<ScheduledRequest>& batch) const {
  if (waiting_.empty()) return false;
  if (running_.empty() || options_.max_admission_delay_steps <= 0) return true;
  for (const ScheduledRequest& entry : batch) {
    if (entry.num_new_tokens > 1 || entry.request->num_computed_tokens <
                                        static_cast<int64_t>(entry.request->prompt_ids.size())) {
      return true;  // prompt tokens in this step already: it runs eagerly either way
    }
  }
  const Request& oldest = *waiting_.front();
  if (oldest.num_preemptions > 0 ||
      num_steps_ - oldest.enqueued_step >= options_.max_admission_delay_steps) {
    return true;
  }
  int64_t waiting_tokens = 0;
  for (const auto& request : waiting_) {
    waiting_tokens += request->num_tokens() - request->num_computed_tokens;
    if (2 * waiting_tokens >= options_.max_num_batched_tokens) return true;
  }
  return false;
}

void Scheduler::preempt(std::unique_ptr<Request> request) {
  blocks_->release(*request);
  request->num_computed_tokens = 0;  // recomputed from prompt + outputs when resumed
  ++request->num_preemptions;
  ++num_preemptions_;
  log_debug("preempted request ", request->id, " (", request->num_tokens(), " tokens)");
  waiting_.push_front(std::move(request));
}

std::vector<ScheduledRequest> Scheduler::schedule() {
  ++num_steps_;
  std::vector<ScheduledRequest> batch;
  int64_t budget = options_.max_num_batched_tokens;
  bool preempted = false;

  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request& request = *running_[i];
    const int64_t num_new = std::min(request.num_tokens() - request.num_computed_tokens, budget);
    bool scheduled = true;
    while (!blocks_->ensure_capacity(request, request.num_computed_tokens + num_new)) {
      // Out of blocks: free the newest running request and retry; if that is this one, it waits.
      std::unique_ptr<Request> victim = std::move(running_.back());
      running_.pop_back();
      preempted = true;
      const bool is_self = victim.get() == &request;
      preempt(std::move(victim));
      if (is_self) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;
    batch.push_back({&request, num_new});
    budget -= num_new;
    ++i;
  }

  // New work only when nothing was preempted: admitting it would just be preempted again.
  const bool admit = !preempted && admits_now(batch);
  while (admit && !waiting_.empty() && budget > 0 &&
         static_cast<int64_t>(running_.size()) < options_.max_num_seqs) {
    Request& request = *waiting_.front();
    const int64_t num_new = std::min(request.num_tokens() - request.num_computed_tokens, budget);
    if (!blocks_->ensure_capacity(request, request.num_computed_tokens + num_new)) break;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    batch.push_back({&request, num_new});
    budget -= num_new;
  }
  return batch;
}

std::vector<std::unique_ptr<Request>> Scheduler::complete_step(
    const std::vector<ScheduledRequest>& batch) {
  for (const ScheduledRequest& entry : batch) {
    entry.request->num_computed_tokens += entry.num_new_tokens;
  }
  std::vector<std::unique_ptr<Request>> finished;
  auto first_finished = std::stable_partition(
      running_.begin(), running_.end(), [](const auto& request) { return !request->finished(); });
  for (auto it = first_finished; it != running_.end(); ++it) {
    blocks_->release(**it);
    finished.push_back(std::move(*it));
  }
  running_.erase(first_finished, running_.end());
  return finished;
}

std::unique_ptr<Request> Scheduler::remove(const std::string& request_id) {
  auto matches = [&](const auto& request) { return request->id == request_id; };
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    std::unique_ptr<Request> request = std::move(*it);
    running_.erase(it);
    blocks_->release(*request);
    return request;
  }
  if (auto it = std::find_if(waiting_.begin(), waiting_.end(), matches); it != waiting_.end()) {
    std::unique_ptr<Request> request = std::move(*it);
    waiting_.erase(it);
    blocks_->release(*request);
    return request;
  }
  return nullptr;
}

std::vector<std::unique_ptr<Request>> Scheduler::remove_all() {
  std::vector<std::unique_ptr<Request>> removed;
  for (std::unique_ptr<Request>& request : running_) removed.push_back(std::move(request));
  running_.clear();
  for (std::unique_ptr<Request>& request : waiting_) removed.push_back(std::move(request));
  waiting_.clear();
  for (const std::unique_ptr<Request>& request : removed) blocks_->release(*request);
  return removed;
}

}  // namespace tidal
