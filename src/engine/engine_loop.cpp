// EngineLoop: the engine thread and the queues between it and request handlers.
#include "engine/engine_loop.h"

#include "common/logging.h"

namespace tidal {

// OutputQueue lives here: it is the loop's side of the handoff.
std::optional<RequestOutput> OutputQueue::pop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !outputs_.empty(); })) return std::nullopt;
  RequestOutput output = std::move(outputs_.front());
  outputs_.pop_front();
  return output;
}

std::optional<RequestOutput> OutputQueue::try_pop() {
  std::lock_guard lock(mutex_);
  if (outputs_.empty()) return std::nullopt;
  RequestOutput output = std::move(outputs_.front());
  outputs_.pop_front();
  return output;
}

void OutputQueue::push(RequestOutput output) {
  {
    std::lock_guard lock(mutex_);
    outputs_.push_back(std::move(output));
  }
  ready_.notify_all();
  std::lock_guard lock(listener_mutex_);
  if (listener_) listener_();
}

void OutputQueue::set_listener(std::function<void()> listener) {
  std::lock_guard lock(listener_mutex_);
  listener_ = std::move(listener);
}

EngineLoop::EngineLoop(Engine& engine) : engine_(&engine), max_model_len_(engine.max_model_len()) {
  // Before any step, so /metrics states the KV cache (and the warm-up) from the start.
  refresh_load();
  thread_ = std::thread([this] { run(); });
}

void EngineLoop::refresh_load() {
  load_.num_running = engine_->scheduler().num_running();
  load_.num_waiting = engine_->scheduler().num_waiting();
  load_.num_kv_blocks = engine_->block_manager().num_blocks();
  load_.num_free_kv_blocks = engine_->block_manager().num_free_blocks();
  load_.num_preemptions = engine_->scheduler().num_preemptions();
  load_.num_warm_ups = engine_->runner().num_warm_ups();
  load_.num_decode_graphs = engine_->runner().num_decode_graphs();
  load_.num_graph_steps = engine_->runner().num_graph_steps();
  load_.step_seconds = engine_->step_seconds();
}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status EngineLoop::submit(const std::string& id, std::vector<int32_t> prompt_ids,
                          SamplingParams params, std::shared_ptr<OutputQueue> queue) {
  // Checked here, on the caller's thread, so a submission never waits for the engine's step to
  // end (a step of a large batch takes a while; an HTTP worker must not).
  if (Status status = engine_->check_request(prompt_ids, params); !status.is_ok()) return status;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Status(StatusCode::kUnavailable, "the engine is shutting down");
    submissions_.push_back(
        Submission{id, std::move(prompt_ids), std::move(params), std::move(queue)});
  }
  wake_.notify_all();
  return Status::ok();
}

void EngineLoop::abort(const std::string& id) {
  {
    std::lock_guard lock(mutex_);
    aborts_.push_back(id);
  }
  wake_.notify_all();
}

std::vector<EngineLoad> EngineLoop::loads() const {
  std::lock_guard lock(mutex_);
  return {load_};
}

void EngineLoop::fail_submission(Submission& submission, const std::string& why) {
  submission.queue->push({.request_id = submission.id,
                          .new_token_ids = {},
                          .new_text = {},
                          .new_logprobs = {},
                          .finish_reason = FinishReason::kAbort,
                          .num_prompt_tokens = 0,
                          .num_output_tokens = 0,
                          .error = why});
}

void EngineLoop::take_commands() {
  std::vector<Submission> submissions;
  std::vector<std::string> aborts;
  {
    std::lock_guard lock(mutex_);
    submissions.swap(submissions_);
    aborts.swap(aborts_);
  }
  for (Submission& submission : submissions) {
    Status status = engine_->add_request(submission.id, std::move(submission.prompt_ids),
                                         std::move(submission.params));
    if (status.is_ok()) {
      queues_[submission.id] = submission.queue;
    } else {
      // Checked at submit; only what needs the engine's state (a duplicate id) fails here.
      fail_submission(submission, status.message());
    }
  }
  for (const std::string& id : aborts) deliver(engine_->abort(id));
}

void EngineLoop::deliver(std::vector<RequestOutput> outputs) {
  for (RequestOutput& output : outputs) {
    const auto it = queues_.find(output.request_id);
    if (it == queues_.end()) continue;
    const bool finished = output.finished();
    it->second->push(std::move(output));
    if (finished) queues_.erase(it);
  }
}

void EngineLoop::run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !submissions_.empty() || !aborts_.empty() || engine_->has_work();
      });
      if (stopping_) break;
    }
    take_commands();
    if (engine_->has_work()) {
      try {
        deliver(engine_->step());
      } catch (const std::exception& error) {
        // A failed step leaves the engine's state unknown: fail every request loudly.
        log_line(LogLevel::kError, cat("engine step failed: ", error.what()));
        for (auto& [id, queue] : queues_) {
          for (RequestOutput& output : engine_->abort(id)) queue->push(std::move(output));
        }
        queues_.clear();
      }
    }
    std::lock_guard lock(mutex_);
    refresh_load();
    ++load_.num_steps;
  }
  // Shutting down: whoever still waits gets a final abort.
  for (auto& [id, queue] : queues_) {
    for (RequestOutput& output : engine_->abort(id)) queue->push(std::move(output));
  }
  std::lock_guard lock(mutex_);
  for (Submission& submission : submissions_)
    fail_submission(submission, "the engine is shutting down");
}

}  // namespace tidal
