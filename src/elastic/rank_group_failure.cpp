// RankGroup's failure handling: detecting lost ranks, and the recovery (an unplanned scale-down)
// that re-forms the survivors and continues every request from the ledger.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <set>

#include "comm/kv_store.h"
#include "common/logging.h"
#include "elastic/rank_group.h"
#include "elastic/rank_group_operation.h"
#include "elastic/rank_protocol.h"
#include "eplb/placement.h"
#include "eplb/recovery_plan.h"

namespace tidal {
namespace protocol = rank_protocol;
using Clock = std::chrono::steady_clock;

namespace {

std::string exit_description(int status) {
  return WIFSIGNALED(status) ? cat("signal ", WTERMSIG(status))
                             : cat("status ", WEXITSTATUS(status));
}

// Recoveries in a row before the group gives up (each loses at least one more rank).
constexpr int kMaxRecoveryAttempts = 8;
constexpr size_t kKeptRecoverySeconds = 1000;

}  // namespace

bool RankGroup::can_serve() const {
  std::lock_guard lock(mutex_);
  return failure_.empty() && !recovering_;
}

void RankGroup::watch_ranks_locked() {
  if (stopping_transition_) return;  // shutdown() reaps everyone itself
  const auto now = Clock::now();
  // A front that was itself stalled (swapped out, stopped) has not heard anyone: start afresh
  // rather than declare every rank silent.
  const bool front_stalled =
      last_watch_ != Clock::time_point{} && now - last_watch_ > options_.rank_timeout / 2;
  last_watch_ = now;
  for (auto& [id, member] : members_) {
    if (member.pid > 0) {
      int status = 0;
      if (::waitpid(member.pid, &status, WNOHANG) == member.pid) {
        member.pid = -1;
        // A leaving rank exits cleanly right after its hand-over, which may still be on its way.
        const bool left = member.leaving && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!member.failed && !member.exit_expected && !left) {
          rank_lost_locked(member, "exited", exit_description(status));
        }
        continue;
      }
    }
    if (front_stalled) member.last_heard = now;
    if (member.failed || member.exit_expected || !member.heard ||
        now - member.last_heard <= options_.rank_timeout) {
      continue;
    }
    rank_lost_locked(member,
                     cat("sent no heartbeat for ", seconds_between(member.last_heard, now), " s"),
                     cat("stopped, hung or unreachable; --rank-timeout ",
                         std::chrono::duration<double>(options_.rank_timeout).count(), " s"));
  }
}

void RankGroup::rank_lost_locked(Member& member, const std::string& what,
                                 const std::string& detail) {
  if (member.failed) return;
  // A joining rank's failure also says where its transition was (it rolls back before the commit).
  const bool preparing = running_ != nullptr && running_->phase == "preparing";
  const std::string cause =
      cat(what, member.joining ? (preparing ? " before the commit" : " during the commit") : "",
          detail.empty() ? std::string() : cat(" (", detail, ")"));
  if (!started_) {
    // Still starting: the group never served, so there is nothing to recover; the start fails,
    // with the rank's own report of why when there is one (its exit may be seen first).
    if (failure_.empty() || cause.starts_with(kReportedFailure)) {
      failure_ = cat("rank ", member.place, " ", cause);
    }
    changed_.notify_all();
    return;
  }
  member.failed = true;
  // A hung or stopped process must not come back into a group that has moved on; its exit is
  // reaped by the watch.
  if (member.pid > 0) ::kill(member.pid, SIGKILL);
  const auto index = std::find(ranks_.begin(), ranks_.end(), member.id);
  const std::string who =
      member.joining ? cat("joining rank ", member.place, " (member ", member.id, ")")
      : index != ranks_.end()
          ? cat("rank ", index - ranks_.begin(), " (member ", member.id, ", ", member.device, ")")
          : cat("member ", member.id, " (", member.device, ")");
  changed_.notify_all();
  if (member.joining) {
    // Its transition rolls back (or, past the commit point, the recovery handles the rest).
    if (member.failure.empty()) member.failure = cat(who, " ", cause);
    log_line(LogLevel::kError, cat("rank failure: ", member.failure));
    return;
  }
  ++stats_.rank_failures;
  log_line(LogLevel::kError, cat("rank failure: ", who, " ", cause));
  if (member.leaving) return;  // it was leaving; its requests continue from the ledger
  begin_recovery_locked(cat(who, " ", cause));
}

void RankGroup::begin_recovery_locked(const std::string& cause) {
  if (recovering_) return;
  recovering_ = true;
  failed_at_ = Clock::now();
  failed_at_system_ = std::chrono::system_clock::now();
  recovery_cause_ = cause;
  // Survivors blocked in a collective with the lost rank give up now rather than at their
  // communicator's timeout (NCCL; a Gloo wait ends when the lost rank's connections close). A
  // transition's epoch is lost too.
  const uint64_t lost = std::max(epoch_, running_ != nullptr ? running_->epoch : uint64_t{0});
  for (const auto& [id, member] : members_) {
    if (!member.failed)
      send_heartbeat_locked(id, {{"type", protocol::kGroupLost}, {"epoch", lost}});
  }
}

void RankGroup::handle_failure_message_locked(Member& sender, const std::string& type,
                                              const nlohmann::json& message) {
  if (type == protocol::kBroken) {
    sender.broken = true;
    sender.held = message.at("held");
    log_warning("member ", sender.id, " gave up epoch ", message.at("epoch").get<uint64_t>(), " (",
                message.at("dropped").get<int64_t>(),
                " requests back to the ledger): ", message.at("message").get<std::string>());
    if (sender.leaving) {
      sender.exit_expected = true;
      send_locked(sender.id, {{"type", protocol::kShutdown}});
    } else if (!sender.failed) {
      // A peer's failure seen from here first (the watch has not seen the exit yet, or a rank on
      // another host has no pid to watch).
      begin_recovery_locked(
          cat("member ", sender.id, " lost its group: ", message.at("message").get<std::string>()));
    }
  } else if (type == protocol::kRecovered) {
    sender.recovered_op = message.at("op").get<uint64_t>();
    sender.warm_ups = message.at("warm_ups").get<int64_t>();
    sender.load.num_warm_ups = sender.warm_ups;
    if (running_ != nullptr && running_->kind == "recover") {
      Operation& op = *running_;
      op.bytes_moved += message.at("bytes_loaded").get<int64_t>();
      op.move_seconds = std::max(op.move_seconds, message.at("load_seconds").get<double>());
      op.warm_seconds = std::max(op.warm_seconds, message.at("warm_seconds").get<double>());
    }
  }
  changed_.notify_all();
}

void RankGroup::prepare_recovery_after_commit_locked(Operation& op, std::vector<int>& pids) {
  std::vector<int> candidates;
  for (const int id : op.new_members) {
    const auto it = members_.find(id);
    if (it == members_.end()) continue;
    it->second.joining = false;  // from here a survivor like the others
    candidates.push_back(id);
  }
  for (const int id : op.old_members) {
    const auto it = members_.find(id);
    if (it == members_.end() || !it->second.leaving) continue;
    it->second.exit_expected = true;
    send_locked(id, {{"type", protocol::kShutdown}});
    if (it->second.pid > 0) {
      ::kill(it->second.pid, SIGKILL);
      pids.push_back(it->second.pid);
    }
    members_.erase(it);
  }
  ranks_ = candidates;
}

void RankGroup::supervise() {
  std::unique_lock lock(mutex_);
  while (!stopping_transition_) {
    // Timed, because shutdown() notifies without the lock.
    changed_.wait_for(lock, std::chrono::milliseconds(100));
    if (stopping_transition_ || running_ != nullptr || !failure_.empty()) continue;
    if (recovering_) {
      run_recovery(lock);
      continue;
    }
    if (!replace_pending_) continue;
    replace_pending_ = false;
    if (static_cast<int>(ranks_.size()) >= desired_num_ranks_) continue;
    // `replace`: back to the size asked for, through the normal scale-up (prepared in the
    // background while the survivors serve).
    lock.unlock();
    const Result<std::string> started = start_scale({.target_ranks = desired_num_ranks_});
    lock.lock();
    if (started.is_ok()) {
      log_info("replacing the lost rank(s): scale ", started.value(), " to ", desired_num_ranks_,
               " ranks");
    } else {
      log_warning("could not start replacing the lost rank(s): ", started.status().message());
    }
  }
}

void RankGroup::run_recovery(std::unique_lock<std::mutex>& lock) {
  auto operation = std::make_shared<Operation>();
  Operation& op = *operation;
  op.kind = "recover";
  op.serial = next_operation_++;
  op.id = cat("recover-", op.serial);
  op.cause = recovery_cause_;
  op.started = failed_at_;
  op.detected_at = failed_at_system_;
  last_recovery_ = op.id;
  op.from_ranks = static_cast<int>(ranks_.size());
  op.epoch_before = epoch_;
  op.phase = "recovering";
  operations_[op.id] = operation;
  running_ = operation;
  log_info("recovery ", op.id, ": ", op.cause);
  std::vector<int> pids;
  std::vector<std::string> stale_prefixes;
  std::string error;
  std::string error_if_last;  // why, if the attempts run out
  bool recovered = false;
  for (int attempt = 0; attempt < kMaxRecoveryAttempts && error.empty() && !recovered; ++attempt) {
    std::vector<int> survivors;
    for (const int id : ranks_) {
      if (!members_.at(id).failed) survivors.push_back(id);
    }
    if (survivors.empty()) {
      error = "every rank is lost";
      break;
    }
    // 1. Every survivor gives up the broken epoch and says what its slots hold. Most already
    // have (their collectives failed); the others (idle in a prepare, say) are told to.
    for (const int id : survivors) {
      if (!members_.at(id).broken) {
        send_locked(id, {{"type", protocol::kBreak}, {"reason", op.cause}});
      }
    }
    const auto break_deadline = Clock::now() + options_.comm_timeout;
    auto lost_one = [&] {
      return std::any_of(survivors.begin(), survivors.end(),
                         [&](int id) { return members_.at(id).failed; });
    };
    changed_.wait_until(lock, break_deadline, [&] {
      return stopping_transition_ || lost_one() ||
             std::all_of(survivors.begin(), survivors.end(),
                         [&](int id) { return members_.at(id).broken; });
    });
    if (stopping_transition_) {
      error = "the server is shutting down";
      break;
    }
    if (lost_one()) {
      error_if_last = cat("ranks kept failing while the survivors gave up their epoch (",
                          kMaxRecoveryAttempts, " attempts)");
      continue;
    }
    for (const int id : survivors) {
      if (!members_.at(id).broken) {
        rank_lost_locked(members_.at(id), "did not give up the broken epoch in time");
      }
    }
    if (lost_one()) continue;

    // 2. Plan the survivors' placement. When their slots cannot hold every expert and `replace`
    // is on, fresh ranks (started here) join in the same step, their slots empty until they load
    // what the plan gives them; otherwise the survivors alone serve and `replace` scales back up
    // afterwards, prepared in the background.
    const size_t num_layers = placements_.size();
    const int min_ranks = eplb::min_num_ranks(num_experts_, options_.slots_per_rank);
    int num_joining = 0;
    if (options_.on_rank_failure == OnRankFailure::kReplace && options_.spawn_joining_ranks) {
      num_joining = std::max(
          0, std::min(min_ranks, options_.max_num_ranks) - static_cast<int>(survivors.size()));
    }
    eplb::RecoveryInput input{.num_logical = num_experts_,
                              .slots_per_rank = options_.slots_per_rank};
    input.held.assign(num_layers, {});
    for (const int id : survivors) {
      const auto held = members_.at(id).held.get<std::vector<std::vector<int32_t>>>();
      TIDAL_CHECK(held.size() == num_layers, "member ", id, " reports ", held.size(),
                  " MoE layers, expected ", num_layers);
      for (size_t layer = 0; layer < num_layers; ++layer) input.held[layer].push_back(held[layer]);
    }
    for (int joiner = 0; joiner < num_joining; ++joiner) {
      for (size_t layer = 0; layer < num_layers; ++layer) {
        input.held[layer].emplace_back(static_cast<size_t>(options_.slots_per_rank), -1);
      }
    }
    Result<eplb::RecoveryPlan> plan = eplb::plan_recovery(input);
    if (!plan.is_ok()) {
      error = plan.status().message();
      break;
    }
    // 3. The survivors (and replacements) form the next epoch, read back what was lost, warm up
    // once, together.
    const uint64_t epoch = next_epoch_++;
    const int num_ranks = static_cast<int>(survivors.size()) + num_joining;
    op.planned = true;
    op.epoch = epoch;
    op.plan.new_num_ranks = num_ranks;
    op.next_placements.clear();
    for (const eplb::LayerRecovery& layer : plan.value().layers) {
      op.next_placements.push_back(layer.next.physical_to_logical());
    }
    op.committed.clear();
    std::vector<int> rank_map;
    for (const int id : survivors) {
      rank_map.push_back(
          static_cast<int>(std::find(ranks_.begin(), ranks_.end(), id) - ranks_.begin()));
    }
    rank_map.resize(static_cast<size_t>(num_ranks), -1);
    for (size_t new_rank = 0; new_rank < survivors.size(); ++new_rank) {
      nlohmann::json loads = nlohmann::json::array();
      for (size_t layer = 0; layer < num_layers; ++layer) {
        for (const eplb::ExpertLoad& load : plan.value().layers[layer].loads) {
          if (load.rank_idx == static_cast<int>(new_rank)) {
            loads.push_back({layer, load.slot_idx, load.logical_id});
          }
        }
      }
      Member& member = members_.at(survivors[new_rank]);
      member.broken = false;
      send_locked(member.id, {{"type", protocol::kRecover},
                              {"op", op.serial},
                              {"epoch", epoch},
                              {"new_rank", new_rank},
                              {"num_ranks", num_ranks},
                              {"placements", op.next_placements},
                              {"rank_map", rank_map},
                              {"loads", loads}});
    }
    // A replacement loads its slots from the checkpoint as it joins (its configuration carries
    // the plan's placement), then waits for its commit to warm up with the survivors.
    std::vector<int> joiners;
    for (int joiner = 0; joiner < num_joining; ++joiner) {
      const int id = add_member_locked(static_cast<int>(survivors.size()) + joiner,
                                       free_device_locked(), true);
      joiners.push_back(id);
      spawn_rank_locked(members_.at(id));
    }
    log_info("recovery ", op.id, ": epoch ", epoch, " with ", survivors.size(),
             " surviving ranks and ", num_joining, " replacement(s), ", plan.value().num_loads,
             " experts read back from the checkpoint");
    stale_prefixes.push_back(cat("gloo/", epoch_, "/"));
    stale_prefixes.push_back(cat("nccl/", epoch_, "/"));
    const auto recover_deadline = Clock::now() + options_.comm_timeout * 2;
    auto broke_again = [&] {
      return std::any_of(
                 survivors.begin(), survivors.end(),
                 [&](int id) { return members_.at(id).failed || members_.at(id).broken; }) ||
             std::any_of(joiners.begin(), joiners.end(),
                         [&](int id) { return !members_.at(id).failure.empty(); });
    };
    std::set<int> commit_sent;
    const bool done = changed_.wait_until(lock, recover_deadline, [&] {
      for (const int id : joiners) {
        if (members_.at(id).ready && commit_sent.insert(id).second) {
          send_locked(id, {{"type", protocol::kCommit}, {"op", op.serial}});
        }
      }
      return stopping_transition_ || broke_again() ||
             (std::all_of(survivors.begin(), survivors.end(),
                          [&](int id) { return members_.at(id).recovered_op == op.serial; }) &&
              std::all_of(joiners.begin(), joiners.end(),
                          [&](int id) { return op.committed.contains(id); }));
    });
    if (stopping_transition_) {
      error = "the server is shutting down";
      break;
    }
    if (!done) {
      for (const int id : survivors) {
        if (members_.at(id).recovered_op != op.serial) {
          rank_lost_locked(members_.at(id), "did not recover in time");
        }
      }
    }
    if (!done || broke_again()) {
      error_if_last = cat("the last of ", kMaxRecoveryAttempts,
                          " attempts failed too (a rank was lost during each)");
      // Someone else was lost on the way: replacements go, the survivors report afresh, and the
      // plan starts over. Ranks still waiting in this epoch's rendezvous are released now.
      for (const int id : joiners) {
        Member& member = members_.at(id);
        if (member.pid > 0) {
          ::kill(member.pid, SIGKILL);
          pids.push_back(member.pid);
        }
        members_.erase(id);
      }
      for (const int id : survivors) {
        if (!members_.at(id).failed && !members_.at(id).broken) {
          send_locked(id, {{"type", protocol::kBreak}, {"reason", "another rank was lost"}});
        }
      }
      const std::vector<std::string> cancelled = {cat("gloo/", epoch, "/"),
                                                  cat("nccl/", epoch, "/")};
      lock.unlock();
      for (const std::string& prefix : cancelled) {
        try {
          store_client_->cancel_prefix(prefix);
        } catch (const std::exception& failure) {
          log_warning("recovery ", op.id, ": could not cancel '", prefix, "': ", failure.what());
        }
      }
      lock.lock();
      ranks_ = survivors;
      epoch_ = epoch;  // the broken epoch's number, for the next stale prefix
      continue;
    }
    // 4. The survivors serve: the router learns them, and every request in flight continues.
    for (const int id : joiners) members_.at(id).joining = false;
    ranks_ = survivors;
    ranks_.insert(ranks_.end(), joiners.begin(), joiners.end());
    epoch_ = epoch;
    placements_ = op.next_placements;
    op.experts_reloaded = plan.value().num_loads;
    recovered = true;
  }

  for (auto it = members_.begin(); it != members_.end();) {
    const bool member_of_group = std::find(ranks_.begin(), ranks_.end(), it->first) != ranks_.end();
    if (!it->second.failed && (member_of_group || !recovered)) {
      ++it;
      continue;
    }
    if (it->second.pid > 0) pids.push_back(it->second.pid);
    it = members_.erase(it);
  }
  ranks_.erase(
      std::remove_if(ranks_.begin(), ranks_.end(), [&](int id) { return !members_.contains(id); }),
      ranks_.end());
  if (!recovered && error.empty()) error = error_if_last;
  op.next_placements = {};  // a finished record keeps what is read back
  op.total_seconds = seconds_between(op.started, Clock::now());
  op.pause_seconds = op.total_seconds;
  op.request.target_ranks = static_cast<int>(ranks_.size());
  recovering_ = false;
  if (recovered) {
    for (int rank = 0; rank < static_cast<int>(ranks_.size()); ++rank) {
      const Member& member = members_.at(ranks_[static_cast<size_t>(rank)]);
      op.ranks_after.push_back(
          {{"rank", rank}, {"member", member.id}, {"warm_and_capture", member.warm_ups}});
    }
    std::vector<std::string> ids;
    for (const auto& [id, live] : live_) ids.push_back(id);
    for (const std::string& id : ids) resubmit_from_ledger_locked(id);
    op.requests_recovered = static_cast<int64_t>(ids.size());
    op.phase = "done";
    op.result = "ok";
    ++stats_.recoveries_ok;
    stats_.requests_recovered += op.requests_recovered;
    stats_.expert_bytes_reloaded += op.bytes_moved;
    stats_.recovery_seconds.push_back(op.total_seconds);
    if (stats_.recovery_seconds.size() > kKeptRecoverySeconds) {
      stats_.recovery_seconds.erase(stats_.recovery_seconds.begin());
    }
    log_info("recovery ", op.id, ": serving again with ", ranks_.size(), " ranks at epoch ", epoch_,
             " after ", op.total_seconds, " s (", op.experts_reloaded, " experts, ", op.bytes_moved,
             " bytes read back in ", op.move_seconds, " s, warm_and_capture ", op.warm_seconds,
             " s, ", op.requests_recovered, " requests continued)");
    replace_pending_ = options_.on_rank_failure == OnRankFailure::kReplace &&
                       static_cast<int>(ranks_.size()) < desired_num_ranks_;
  } else {
    op.phase = "failed";
    op.result = "failed";
    op.error = cat("cannot recover from the failure (", op.cause, "): ", error);
    ++stats_.recoveries_failed;
    // Nothing can serve: every request ends visibly, with the reason.
    if (failure_.empty()) failure_ = op.error;
    log_line(LogLevel::kError, cat("recovery ", op.id, ": ", op.error));
    abort_everything_locked();
  }
  changed_.notify_all();
  lock.unlock();
  for (const std::string& prefix : stale_prefixes) {
    try {
      store_client_->delete_prefix(prefix);
    } catch (const std::exception& failure) {
      log_warning("recovery ", op.id, ": could not delete the store's '", prefix,
                  "': ", failure.what());
    }
  }
  for (const int pid : pids) reap(pid, std::chrono::seconds(10));
  lock.lock();
  running_ = nullptr;
  changed_.notify_all();
}

}  // namespace tidal
