// RankGroup's elastic transitions: admission, prepare, commit, rollback and their records.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>

#include "backend/backend.h"
#include "comm/kv_store.h"
#include "common/logging.h"
#include "elastic/rank_group.h"
#include "elastic/rank_group_operation.h"
#include "elastic/rank_protocol.h"
#include "eplb/placement.h"

namespace tidal {
namespace protocol = rank_protocol;
using Clock = std::chrono::steady_clock;

ScalePlanInput RankGroup::plan_input_locked(
    const std::vector<std::vector<int32_t>>& placements) const {
  ScalePlanInput input{.num_logical = num_experts_,
                       .slots_per_rank = options_.slots_per_rank,
                       .max_num_ranks = options_.max_num_ranks};
  for (const std::vector<int32_t>& layer : placements) {
    input.current.emplace_back(num_experts_, static_cast<int>(ranks_.size()),
                               options_.slots_per_rank, layer);
  }
  for (const int id : ranks_) {
    input.outstanding_tokens.push_back(members_.at(id).outstanding_tokens);
  }
  return input;
}

std::string RankGroup::free_device_locked() const {
  if (!is_cuda_device(options_.device)) return options_.device;
  for (int gpu = 0;; ++gpu) {
    const std::string candidate = cat("cuda:", gpu);
    // A failed rank's device is free: its process is killed (the replacement may take it).
    const bool used = std::any_of(members_.begin(), members_.end(), [&](const auto& entry) {
      return entry.second.device == candidate && !entry.second.failed;
    });
    if (!used) return candidate;
  }
}

Result<std::string> RankGroup::start_scale(const ScaleRequest& request) {
  std::lock_guard start_lock(start_scale_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (stopping_transition_)
      return Status(StatusCode::kUnavailable, "the server is shutting down");
    if (!failure_.empty()) return Status(StatusCode::kUnavailable, failure_);
    if (recovering_) {
      return Status(StatusCode::kUnavailable, cat("recovering from a rank failure (",
                                                  recovery_cause_, "); try again after it"));
    }
    // An operation that has reached its outcome is only cleaning up (reaping processes, dropping
    // store keys): the join below waits for that instead of refusing.
    if (running_ != nullptr && !running_->finished()) {
      return Status(StatusCode::kConflict,
                    cat("scale operation ", running_->id, " (", running_->from_ranks, " -> ",
                        running_->request.target_ranks, " ranks) is still running"));
    }
  }
  // The last transition's thread has reached its outcome; collect it.
  if (transition_thread_.joinable()) transition_thread_.join();

  std::lock_guard lock(mutex_);
  const ScalePlanInput input = plan_input_locked(placements_);
  // Validation only: the plan that runs is made from the ranks' own report (see
  // run_transition), which includes load balancing's latest placement.
  const Result<ScalePlan> check = plan_scale(input, request);
  if (!check.is_ok()) return check.status();

  auto operation = std::make_shared<Operation>();
  operation->serial = next_operation_++;
  operation->id = cat("scale-", operation->serial);
  operation->request = request;
  operation->from_ranks = static_cast<int>(ranks_.size());
  operation->epoch_before = epoch_;
  operations_[operation->id] = operation;
  // Records stay queryable for a while, not forever: a server that scales all day keeps the
  // last kKeptOperations (ids are serial, so the oldest go first).
  constexpr size_t kKeptOperations = 100;
  while (operations_.size() > kKeptOperations) {
    const auto oldest = std::min_element(
        operations_.begin(), operations_.end(),
        [](const auto& a, const auto& b) { return a.second->serial < b.second->serial; });
    operations_.erase(oldest);
  }
  if (request.target_ranks == operation->from_ranks) {
    operation->phase = "done";
    operation->result = "no-op";
    log_info("scale ", operation->id, ": already at ", request.target_ranks, " ranks");
    return operation->id;
  }
  running_ = operation;
  log_info("scale ", operation->id, ": ", operation->from_ranks, " -> ", request.target_ranks,
           " ranks, preparing");
  transition_thread_ =
      std::thread([this, operation, request] { run_transition(operation, request); });
  return operation->id;
}

void RankGroup::run_transition(std::shared_ptr<Operation> operation, ScaleRequest request) {
  Operation& op = *operation;
  std::unique_lock lock(mutex_);
  // What is left to do once the outcome is decided, outside the lock: processes to reap and
  // store prefixes to drop (deleted after a commit, cancelled after a rollback).
  std::vector<int> pids;
  std::vector<std::string> delete_prefixes, cancel_prefixes;
  try {
    run_transition_steps(op, request, lock, pids, delete_prefixes, cancel_prefixes);
  } catch (const std::exception& error) {
    if (!lock.owns_lock()) lock.lock();
    if (op.phase == "preparing") {
      rollback_locked(op, cat("the coordinator failed: ", error.what()), pids, cancel_prefixes);
    } else if (op.phase == "committing") {
      fail_group_locked(op, cat("the coordinator failed during the commit: ", error.what()));
    } else {
      log_line(LogLevel::kError, cat("scale ", op.id, ": cleaning up failed: ", error.what()));
    }
  }
  if (lock.owns_lock()) lock.unlock();
  for (const std::string& prefix : delete_prefixes) {
    try {
      store_client_->delete_prefix(prefix);
    } catch (const std::exception& error) {
      log_warning("scale ", op.id, ": could not delete the store's '", prefix, "': ", error.what());
    }
  }
  for (const std::string& prefix : cancel_prefixes) {
    try {
      store_client_->cancel_prefix(prefix);
    } catch (const std::exception& error) {
      log_warning("scale ", op.id, ": could not cancel the store's '", prefix, "': ", error.what());
    }
  }
  for (const int pid : pids) reap(pid, std::chrono::seconds(10));
  // Only now may the next operation start: everything of this one is cleaned up.
  lock.lock();
  // A finished record keeps what is read back, not every layer's placement.
  op.plan.next = {};
  op.next_placements = {};
  running_ = nullptr;
  changed_.notify_all();
}

void RankGroup::run_transition_steps(Operation& op, const ScaleRequest& request,
                                     std::unique_lock<std::mutex>& lock, std::vector<int>& pids,
                                     std::vector<std::string>& delete_prefixes,
                                     std::vector<std::string>& cancel_prefixes) {
  // Waits until `done`, or returns why it cannot be: the deadline, a joining rank that failed or
  // exited, the group failing, shutdown.
  auto wait = [&](auto done, Clock::time_point deadline, const char* what) -> std::string {
    for (;;) {
      if (done()) return "";
      if (stopping_transition_) return "the server is shutting down";
      if (!failure_.empty()) return failure_;
      if (!op.standby_error.empty()) return op.standby_error;
      // A rank of the group failed (the watch on the I/O thread saw it): the recovery takes over.
      if (recovering_) return cat("a rank failed: ", recovery_cause_);
      for (const int id : op.joining) {
        // Set by the watch when the process exits, or by the rank's own failure report.
        if (const Member& member = members_.at(id); !member.failure.empty()) return member.failure;
      }
      if (Clock::now() >= deadline) return cat("timed out waiting for ", what);
      changed_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    }
  };
  const auto prepare_deadline = op.started + options_.prepare_timeout;

  // 1. Hold load balancing and learn every layer's placement and load.
  op.old_members = ranks_;
  for (const int id : op.old_members) {
    send_locked(id, {{"type", protocol::kHold}, {"op", op.serial}});
  }
  std::string error = wait([&] { return op.held.size() == op.old_members.size(); },
                           prepare_deadline, "the ranks' placement reports");
  if (!error.empty()) return rollback_locked(op, error, pids, cancel_prefixes);

  // 2. Plan.
  ScalePlanInput input = plan_input_locked(
      op.held.at(op.old_members.front()).at("placements").get<std::vector<std::vector<int32_t>>>());
  input.load.assign(input.current.size(), {});
  for (const auto& [id, report] : op.held) {
    const auto load = report.at("load").get<std::vector<std::vector<double>>>();
    for (size_t layer = 0; layer < load.size() && layer < input.load.size(); ++layer) {
      input.load[layer].resize(load[layer].size(), 0.0);
      for (size_t e = 0; e < load[layer].size(); ++e) input.load[layer][e] += load[layer][e];
    }
  }
  Result<ScalePlan> plan = plan_scale(input, request);
  if (!plan.is_ok()) return rollback_locked(op, plan.status().message(), pids, cancel_prefixes);
  op.plan = std::move(plan.value());
  op.held.clear();  // the reports were only needed to plan
  op.epoch = next_epoch_++;
  for (const eplb::Placement& placement : op.plan.next) {
    op.next_placements.push_back(placement.physical_to_logical());
  }

  // 3. Joining ranks get places (and GPUs nobody uses) after the staying ones.
  for (int place = 0; place < op.plan.new_num_ranks; ++place) {
    const int old_rank = op.plan.rank_map[static_cast<size_t>(place)];
    if (old_rank >= 0) {
      op.new_members.push_back(op.old_members[static_cast<size_t>(old_rank)]);
      continue;
    }
    const int id = add_member_locked(place, free_device_locked(), true);
    op.joining.push_back(id);
    op.new_members.push_back(id);
  }
  for (size_t old_rank = 0; old_rank < op.old_members.size(); ++old_rank) {
    const auto it =
        std::find(op.plan.rank_map.begin(), op.plan.rank_map.end(), static_cast<int>(old_rank));
    const int new_rank =
        it == op.plan.rank_map.end() ? -1 : static_cast<int>(it - op.plan.rank_map.begin());
    send_locked(op.old_members[old_rank], {{"type", protocol::kStandby},
                                           {"op", op.serial},
                                           {"epoch", op.epoch},
                                           {"new_rank", new_rank},
                                           {"num_ranks", op.plan.new_num_ranks},
                                           {"placements", op.next_placements},
                                           {"rank_map", op.plan.rank_map}});
  }
  op.planned = true;
  log_info("scale ", op.id, ": planned epoch ", op.epoch, " (", op.plan.new_num_ranks,
           " ranks; leaving ", nlohmann::json(op.plan.removed).dump(), ", joining ",
           op.joining.size(), ")");
  if (options_.spawn_joining_ranks) {
    for (const int id : op.joining) {
      // The wait below reaps whatever it started either way.
      spawn_rank_locked(members_.at(id));
    }
  } else if (!op.joining.empty()) {
    log_info("scale ", op.id, ": waiting ", options_.prepare_timeout.count(), " ms for ",
             op.joining.size(), " rank(s) started with `tidal rank --coordinator ",
             control_endpoint_, "` and the rank secret");
  }
  error = wait(
      [&] {
        return op.standby_ready.size() == op.old_members.size() &&
               std::all_of(op.joining.begin(), op.joining.end(),
                           [&](int id) { return members_.at(id).ready; });
      },
      prepare_deadline, "the joining ranks and the standby communicator");
  if (!error.empty()) return rollback_locked(op, error, pids, cancel_prefixes);

  // 4. The commit point.
  const auto commit_sent = Clock::now();
  op.prepare_seconds = seconds_between(op.started, commit_sent);
  op.phase = "committing";
  log_info("scale ", op.id, ": prepared in ", op.prepare_seconds, " s; committing epoch ",
           op.epoch);
  std::vector<int> leaving;
  for (const int id : op.old_members) {
    if (std::find(op.new_members.begin(), op.new_members.end(), id) == op.new_members.end()) {
      members_.at(id).leaving = true;
      leaving.push_back(id);
    }
  }
  for (const int id : op.old_members) {
    send_locked(id, {{"type", protocol::kCommit}, {"op", op.serial}});
  }
  for (const int id : op.joining) send_locked(id, {{"type", protocol::kCommit}, {"op", op.serial}});
  op.standby_error.clear();
  error = wait(
      [&] {
        // A leaving rank that dies once its weights have gone out hands nothing back: its
        // requests continue from the ledger below.
        const auto gone = std::count_if(leaving.begin(), leaving.end(), [&](int id) {
          return members_.at(id).failed && !op.handed_off.contains(id);
        });
        return op.committed.size() == op.new_members.size() &&
               op.handed_off.size() + static_cast<size_t>(gone) == leaving.size();
      },
      commit_sent + options_.comm_timeout * 2, "the commit");
  if (!error.empty() && recovering_) {
    // A rank failed during the commit: the survivors of both epochs recover together.
    op.phase = "failed";
    op.result = "failed";
    op.error = cat("commit interrupted: ", error, "; recovering");
    op.total_seconds = seconds_between(op.started, Clock::now());
    ++stats_.transitions_failed;
    log_line(LogLevel::kError, cat("scale ", op.id, ": ", op.error));
    prepare_recovery_after_commit_locked(op, pids);
    delete_prefixes.push_back(cat("gloo/", op.epoch_before, "/"));
    delete_prefixes.push_back(cat("nccl/", op.epoch_before, "/"));
    return;
  }
  if (!error.empty()) return fail_group_locked(op, cat("commit failed: ", error));
  op.pause_seconds = seconds_between(commit_sent, Clock::now());

  // 5. The router learns the new rank set.
  ranks_ = op.new_members;
  epoch_ = op.epoch;
  placements_ = op.next_placements;
  for (const int id : op.joining) {
    Member& member = members_.at(id);
    member.joining = false;
    max_model_len_ = std::min(max_model_len_, member.max_model_len);
  }
  for (int rank = 0; rank < static_cast<int>(ranks_.size()); ++rank) {
    const Member& member = members_.at(ranks_[static_cast<size_t>(rank)]);
    op.ranks_after.push_back(
        {{"rank", rank}, {"member", member.id}, {"warm_and_capture", member.warm_ups}});
  }
  for (const int id : leaving) {
    const Member& member = members_.at(id);
    const auto old_rank =
        std::find(op.old_members.begin(), op.old_members.end(), id) - op.old_members.begin();
    op.removed.push_back(
        {{"rank", old_rank}, {"member", id}, {"warm_and_capture", member.warm_ups}});
    if (member.pid > 0) pids.push_back(member.pid);
    members_.erase(id);
  }
  std::vector<std::string> orphans;
  for (const auto& [id, live] : live_) {
    // A request a leaving rank refused is its submitter's to clean up (its verdict says so).
    if (!members_.contains(live.member) && live.accepted) orphans.push_back(id);
  }
  for (const std::string& id : orphans) {
    // Its leaving rank died before handing it back: it continues from the ledger.
    if (resubmit_from_ledger_locked(id)) ++op.requests_migrated;
  }
  desired_num_ranks_ = static_cast<int>(ranks_.size());
  op.total_seconds = seconds_between(op.started, Clock::now());
  op.phase = "done";
  op.result = "ok";
  ++stats_.transitions_ok;
  stats_.requests_migrated += op.requests_migrated;
  stats_.bytes_moved += op.bytes_moved;
  stats_.last_prepare_seconds = op.prepare_seconds;
  stats_.last_pause_seconds = op.pause_seconds;
  stats_.last_move_seconds = op.move_seconds;
  stats_.last_warm_and_capture_seconds = op.warm_seconds;
  stats_.last_total_seconds = op.total_seconds;
  log_info("scale ", op.id, ": epoch ", epoch_, " with ", ranks_.size(), " ranks (prepare ",
           op.prepare_seconds, " s, pause ", op.pause_seconds, " s, moved ", op.bytes_moved,
           " bytes in ", op.move_seconds, " s, warm_and_capture ", op.warm_seconds, " s, ",
           op.requests_migrated, " requests migrated, total ", op.total_seconds, " s)");
  // The old epoch's rendezvous keys are dead weight in the store from here on.
  delete_prefixes.push_back(cat("gloo/", op.epoch_before, "/"));
  delete_prefixes.push_back(cat("nccl/", op.epoch_before, "/"));
}

void RankGroup::fail_group_locked(Operation& op, const std::string& reason) {
  // Past the commit point there is no way back: the group has failed.
  op.phase = "failed";
  op.result = "failed";
  op.error = reason;
  op.total_seconds = seconds_between(op.started, Clock::now());
  if (failure_.empty()) failure_ = reason;
  abort_everything_locked();
  ++stats_.transitions_failed;
  log_line(LogLevel::kError, cat("scale ", op.id, ": ", reason));
  changed_.notify_all();
}

void RankGroup::rollback_locked(Operation& op, const std::string& reason, std::vector<int>& pids,
                                std::vector<std::string>& cancel_prefixes) {
  for (const int id : op.old_members) {
    if (members_.contains(id)) send_locked(id, {{"type", protocol::kRollback}, {"op", op.serial}});
  }
  for (const int id : op.joining) {
    const auto it = members_.find(id);
    if (it == members_.end()) continue;
    if (it->second.pid > 0) {
      ::kill(it->second.pid, SIGKILL);
      pids.push_back(it->second.pid);
    }
    members_.erase(it);
  }
  if (op.epoch != 0) {
    // Staying ranks may still wait in the epoch's rendezvous for a rank that will never come:
    // release them now rather than at their timeout.
    cancel_prefixes.push_back(cat("gloo/", op.epoch, "/"));
    cancel_prefixes.push_back(cat("nccl/", op.epoch, "/"));
  }
  op.phase = "failed";
  op.result = "failed";
  op.error = reason;
  op.total_seconds = seconds_between(op.started, Clock::now());
  ++stats_.transitions_failed;
  log_line(LogLevel::kError, cat("scale ", op.id, ": rolled back, still ", ranks_.size(),
                                 " ranks at epoch ", epoch_, ": ", reason));
  changed_.notify_all();
}

void RankGroup::handle_transition_message_locked(Member& sender, const std::string& type,
                                                 const nlohmann::json& message) {
  Operation* op = running_.get();
  if (op == nullptr || message.at("op").get<uint64_t>() != op->serial) {
    log_warning("dropped a '", type, "' message of a finished transition");
    return;
  }
  if (type == protocol::kHeld) {
    op->held[sender.id] = message;
  } else if (type == protocol::kStandbyReady) {
    if (message.at("ok").get<bool>()) {
      op->standby_ready.insert(sender.id);
    } else if (op->standby_error.empty()) {
      op->standby_error = cat("rank ", sender.place, " could not form the epoch ", op->epoch,
                              " communicator: ", message.at("message").get<std::string>());
    }
  } else if (type == protocol::kCommitted) {
    op->committed.insert(sender.id);
    sender.warm_ups = message.at("warm_ups").get<int64_t>();
    sender.load.num_warm_ups = sender.warm_ups;
    op->bytes_moved += message.at("bytes_moved").get<int64_t>();
    op->move_seconds = std::max(op->move_seconds, message.at("move_seconds").get<double>());
    op->warm_seconds = std::max(op->warm_seconds, message.at("warm_seconds").get<double>());
    op->rank_pause_seconds =
        std::max(op->rank_pause_seconds, message.at("pause_seconds").get<double>());
  } else if (type == protocol::kHandoff) {
    op->handed_off.insert(sender.id);
    sender.exit_expected = true;  // it exits now
    sender.warm_ups = message.at("warm_ups").get<int64_t>();
    op->bytes_moved += message.at("bytes_moved").get<int64_t>();
    op->move_seconds = std::max(op->move_seconds, message.at("move_seconds").get<double>());
    for (const nlohmann::json& request : message.at("requests")) {
      if (adopt_handoff_locked(request)) ++op->requests_migrated;
    }
  } else {
    log_warning("dropped an unknown '", type, "' message from rank ", sender.place);
  }
  changed_.notify_all();
}

bool RankGroup::adopt_handoff_locked(const nlohmann::json& request) {
  const std::string id = request.at("id").get<std::string>();
  const auto it = live_.find(id);
  if (it == live_.end()) return false;
  Live& live = it->second;
  if (live.abort_requested) {
    // The client gave up while its request was between ranks.
    end_aborted_locked(it, "");  // the client gave up
    return false;
  }
  // Its rank may be gone already (a lost rank's requests continue from the ledger).
  if (const auto member = members_.find(live.member); member != members_.end()) {
    member->second.outstanding_tokens -= live.tokens;
  }
  const int target = least_loaded_member_locked();
  live.member = target;
  members_.at(target).outstanding_tokens += live.tokens;
  send_locked(target, {{"type", protocol::kAdopt}, {"request", request}});
  return true;
}

bool RankGroup::resubmit_from_ledger_locked(const std::string& id) {
  const auto it = live_.find(id);
  if (it == live_.end()) return false;
  const Live& live = it->second;
  // What a leaving rank would have handed back, from what the client has been sent.
  const RequestHandoff handoff{.id = id,
                               .prompt_ids = live.prompt_ids,
                               .params = live.params,
                               .output_ids = live.output_ids,
                               .text_sent = live.text_sent,
                               .seed = live.params.seed.value_or(0),
                               .num_preemptions = 0};
  return adopt_handoff_locked(protocol::to_json(handoff));
}

std::optional<nlohmann::json> RankGroup::scale_operation(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto it = operations_.find(id);
  if (it == operations_.end()) return std::nullopt;
  return operation_json_locked(*it->second);
}

nlohmann::json RankGroup::operation_json_locked(const Operation& op) const {
  const double elapsed =
      op.finished() ? op.total_seconds : seconds_between(op.started, Clock::now());
  nlohmann::json record = {
      {"id", op.id},
      {"kind", op.kind},
      {"from_ranks", op.from_ranks},
      {"target_ranks", op.request.target_ranks},
      {"phase", op.phase},
      {"result", op.result.empty() ? nlohmann::json(nullptr) : nlohmann::json(op.result)},
      {"error", op.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(op.error)},
      {"epoch_before", op.epoch_before},
      {"epoch_after", op.result == "ok" ? nlohmann::json(op.epoch) : nlohmann::json(nullptr)},
      {"removed_ranks", op.plan.removed},
      {"removed", op.removed},
      {"ranks_after", op.ranks_after},
      {"requests_migrated", op.requests_migrated},
      {"timings",
       {{"prepare_seconds", op.prepare_seconds},
        {"pause_seconds", op.pause_seconds},
        {"rank_pause_seconds", op.rank_pause_seconds},
        {"weight_move_seconds", op.move_seconds},
        {"weight_move_bytes", op.bytes_moved},
        {"warm_and_capture_seconds", op.warm_seconds},
        {"total_seconds", elapsed}}}};
  if (op.kind == "recover") {
    record["cause"] = op.cause;
    record["detected_at_unix"] =
        std::chrono::duration<double>(op.detected_at.time_since_epoch()).count();
    record["experts_reloaded"] = op.experts_reloaded;
    record["requests_recovered"] = op.requests_recovered;
  }
  return record;
}

nlohmann::json RankGroup::topology() const {
  std::lock_guard lock(mutex_);
  nlohmann::json ranks = nlohmann::json::array();
  for (size_t rank = 0; rank < ranks_.size(); ++rank) {
    const Member& member = members_.at(ranks_[rank]);
    const char* state = member.failed   ? "failed"
                        : member.broken ? "recovering"
                        : recovering_   ? "waiting"
                                        : "serving";
    ranks.push_back({{"rank", rank},
                     {"member", member.id},
                     {"state", state},
                     {"device", member.device},
                     {"pid", member.pid},
                     {"warm_and_capture", member.warm_ups},
                     {"outstanding_tokens", member.outstanding_tokens},
                     {"running", member.load.num_running},
                     {"waiting", member.load.num_waiting}});
  }
  // Replicas per logical expert over every layer: how much redundancy the placement has.
  int min_replicas = 0, max_replicas = 0;
  nlohmann::json replicas = nlohmann::json::array();  // [MoE layer][logical expert]
  for (const std::vector<int32_t>& layer : placements_) {
    std::vector<int> count(static_cast<size_t>(num_experts_), 0);
    for (const int32_t logical : layer) {
      if (logical >= 0) ++count[static_cast<size_t>(logical)];
    }
    const auto [low, high] = std::minmax_element(count.begin(), count.end());
    min_replicas = min_replicas == 0 ? *low : std::min(min_replicas, *low);
    max_replicas = std::max(max_replicas, *high);
    replicas.push_back(count);
  }
  return {{"epoch", epoch_},
          {"coordinator", control_endpoint_},
          {"num_ranks", ranks_.size()},
          {"max_ranks", options_.max_num_ranks},
          {"device", options_.device},
          {"scaling", running_ && !running_->finished() ? nlohmann::json(running_->id)
                                                        : nlohmann::json(nullptr)},
          {"recovering", recovering_},
          {"last_recovery",
           last_recovery_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_recovery_)},
          {"rank_failures", stats_.rank_failures},
          {"failure", failure_.empty() ? nlohmann::json(nullptr) : nlohmann::json(failure_)},
          {"ranks", ranks},
          {"placement",
           {{"num_logical_experts", num_experts_},
            {"slots_per_rank", options_.slots_per_rank},
            {"physical_slots", static_cast<int>(ranks_.size()) * options_.slots_per_rank},
            {"moe_layers", placements_.size()},
            {"min_replicas", min_replicas},
            {"max_replicas", max_replicas},
            {"replicas", replicas}}}};
}

bool RankGroup::is_scaling() const {
  std::lock_guard lock(mutex_);
  return running_ != nullptr && !running_->finished();
}

ScaleStats RankGroup::scale_stats() const {
  std::lock_guard lock(mutex_);
  ScaleStats stats = stats_;
  stats.epoch = epoch_;
  stats.num_ranks = static_cast<int>(ranks_.size());
  return stats;
}

}  // namespace tidal
