// RankWorker: join, then the lockstep loop of sync, step and output, with elastic transitions
// and load balancing between steps.
#include "elastic/rank_worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/logging.h"
#include "common/phase_clock.h"
#include "elastic/rank_heartbeat.h"
#include "elastic/rank_protocol.h"
#include "elastic/rank_rebalance.h"
#include "elastic/rank_secret.h"
#include "elastic/rank_state.h"
#include "elastic/rank_transition.h"

namespace tidal {
namespace {

namespace protocol = rank_protocol;
using Clock = std::chrono::steady_clock;

class ControlChannel {
 public:
  ControlChannel(const std::string& endpoint, int rank)
      : identity_(cat("rank-", rank, "-pid-", ::getpid(), "-", random_hex(8))),
        socket_(context_, zmq::socket_type::dealer) {
    // Unique per process: ranks started by hand all ask for "any rank" (-1). The front trusts an
    // admitted rank's messages by this identity; its random part keeps anyone else from taking
    // it over should the rank's connection drop.
    socket_.set(zmq::sockopt::routing_id, identity_);
    socket_.set(zmq::sockopt::linger, 2000);  // a leaving rank's last messages still go out
    socket_.connect(endpoint);
  }
  void send(const nlohmann::json& message) {
    const std::string bytes = protocol::encode(message);
    socket_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }
  // The next message, or nullopt after `timeout`.
  std::optional<nlohmann::json> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    zmq::message_t message;
    if (!socket_.recv(message, zmq::recv_flags::dontwait)) return std::nullopt;
    return protocol::decode(message.to_string());
  }
  const std::string& identity() const { return identity_; }

 private:
  std::string identity_;
  zmq::context_t context_;
  zmq::socket_t socket_;
};

EngineLoad load_of(const Engine& engine) {
  return {.num_running = engine.scheduler().num_running(),
          .num_waiting = engine.scheduler().num_waiting(),
          .num_kv_blocks = engine.block_manager().num_blocks(),
          .num_free_kv_blocks = engine.block_manager().num_free_blocks(),
          .num_preemptions = engine.scheduler().num_preemptions(),
          .num_steps = 0,
          .num_warm_ups = engine.runner().num_warm_ups(),
          .num_decode_graphs = engine.runner().num_decode_graphs(),
          .num_graph_steps = engine.runner().num_graph_steps(),
          .num_outstanding_tokens = 0};
}

// Steps between two reads of the device's expert load counters.
constexpr int64_t kLoadReadSteps = 16;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Test-only holds, so that tests can kill a rank at a chosen point: a joining rank before it
// forms its communicator (TIDAL_TEST_JOIN_STALL_MS), every old rank at the start of a commit
// (TIDAL_TEST_COMMIT_STALL_MS), a leaving rank before it hands its requests back
// (TIDAL_TEST_HANDOFF_STALL_MS). Unset, they do nothing. A number holds for that many
// milliseconds. "gate:PATH" creates PATH.arrived.<pid> and holds until PATH exists (at most
// kTestGateLimit): a test then acts while the rank is certainly at that point, where a timer
// races the test's own delays on a loaded machine.
constexpr auto kTestGateLimit = std::chrono::seconds(60);

void stall_for_tests(const char* variable) {
  const char* stall = std::getenv(variable);
  if (stall == nullptr) return;
  const std::string_view value(stall);
  constexpr std::string_view kGate = "gate:";
  if (!value.starts_with(kGate)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(stall)));
    return;
  }
  const std::filesystem::path gate(value.substr(kGate.size()));
  std::ofstream(gate.string() + ".arrived." + std::to_string(::getpid())).put('\n');
  const auto deadline = Clock::now() + kTestGateLimit;
  while (!std::filesystem::exists(gate) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Thrown by step_once when this rank has handed its requests back and leaves the group.
struct LeaveGroup {};

// One rank process from its first epoch (or its joining) to its exit.
class Worker {
 public:
  Worker(ControlChannel& control, std::unique_ptr<RankState> rank)
      : control_(control), rank_(std::move(rank)) {}

  // Returns the exit code.
  int run();
  // A joining rank: waits for its transition's commit, then warms up with the new epoch.
  // Returns false when told to shut down first.
  bool await_commit();

 private:
  void handle(const nlohmann::json& message);
  // One round of the lockstep loop: agree with the group, then step, commit a transition or
  // idle. Returns false when the group agreed to stop; throws LeaveGroup when this rank left at a
  // commit, CommError when the group broke.
  bool step_once();
  void send_outputs(const std::vector<RequestOutput>& outputs);
  // Between steps, at the step all old ranks agreed on: weights, hand-back or switch, warm-up.
  // Returns false when this rank leaves the group.
  bool commit();
  void report_committed(uint64_t op, const CommitReport& report);
  // The epoch's communicator failed (a peer died or hung): close it, drop every request (the
  // front continues them from its ledger) and every transition in progress, and report what the
  // expert slots hold. Until a kRecover comes, the rank steps no more.
  void break_epoch(const std::string& why);
  // Returns `code`, or ends the process with it at once when a standby rendezvous still runs a
  // second after the group stopped (see the definition).
  int exit_code(int code);
  // kRecover: form the survivors' communicator, read back the lost experts assigned here, take
  // the new placement, warm up once. A failure on the way leaves the rank broken (reported again).
  void recover(const nlohmann::json& message);

  ControlChannel& control_;
  std::unique_ptr<RankState> rank_;
  bool stop_requested_ = false;
  int64_t steps_ = 0;
  // The loop's own share of the step time (the engine keeps the rest): the agreement to step,
  // sending outputs, and expert load balancing.
  StepSeconds step_seconds_;
  EplbReport eplb_;
  // Transitions: the operation holding load balancing, the standby of the one being prepared,
  // and the commit received for it. Rolled-back standbys finish their rendezvous (or time out)
  // in the background and are joined at exit.
  uint64_t holding_op_ = 0;
  std::unique_ptr<StandbyGroup> standby_;
  std::optional<RankTransition> transition_;
  bool standby_reported_ = false;
  uint64_t commit_op_ = 0;
  std::vector<std::unique_ptr<StandbyGroup>> abandoned_;
  bool broken_ = false;
};

void Worker::send_outputs(const std::vector<RequestOutput>& outputs) {
  nlohmann::json list = nlohmann::json::array();
  for (const RequestOutput& output : outputs) list.push_back(protocol::to_json(output));
  EngineLoad load = load_of(*rank_->engine);
  load.num_steps = steps_;
  load.eplb_rebalances = eplb_.rebalances;
  load.eplb_bytes_moved = eplb_.bytes_moved;
  load.eplb_seconds = eplb_.seconds;
  load.eplb_longest_pause_seconds = eplb_.longest_pause_seconds;
  load.eplb_balancedness_before = eplb_.balancedness_before;
  load.eplb_balancedness_after = eplb_.balancedness_after;
  load.step_seconds = rank_->engine->step_seconds();
  load.step_seconds += step_seconds_;
  control_.send(
      {{"type", protocol::kOutputs}, {"outputs", list}, {"load", protocol::to_json(load)}});
}

void Worker::handle(const nlohmann::json& message) {
  Engine& engine = *rank_->engine;
  const std::string type = message.at("type").get<std::string>();
  // A new request and an adopted one get the same verdict message.
  auto reply_submitted = [&](const std::string& id, const Status& status) {
    control_.send({{"type", protocol::kSubmitted},
                   {"id", id},
                   {"ok", status.is_ok()},
                   {"message", status.message()}});
  };
  if (broken_ &&
      (type == protocol::kSubmit || type == protocol::kAdopt || type == protocol::kHold ||
       type == protocol::kStandby || type == protocol::kCommit)) {
    // The front re-sends every request in flight once the survivors' epoch has formed, and a
    // transition cannot go on over a broken group: none of these has anything left to act on.
    return;
  }
  if (type == protocol::kBreak) {
    if (!broken_) break_epoch(cat("the front: ", message.at("reason").get<std::string>()));
  } else if (type == protocol::kRecover) {
    recover(message);
  } else if (type == protocol::kSubmit) {
    const std::string id = message.at("id").get<std::string>();
    reply_submitted(id, engine.add_request(id, message.at("prompt_ids").get<std::vector<int32_t>>(),
                                           protocol::params_from_json(message.at("params"))));
  } else if (type == protocol::kAdopt) {
    RequestHandoff handoff = protocol::handoff_from_json(message.at("request"));
    const std::string id = handoff.id;
    reply_submitted(id, engine.adopt(std::move(handoff)));
  } else if (type == protocol::kAbort) {
    send_outputs(engine.abort(message.at("id").get<std::string>()));
  } else if (type == protocol::kShutdown) {
    stop_requested_ = true;
  } else if (type == protocol::kHold) {
    holding_op_ = message.at("op").get<uint64_t>();
    // The coordinator plans the transition from this load: the device counters' steps since the
    // last read join the window first.
    if (rank_->load_window) {
      rank_->executor->collect_load(*rank_->backend);
      rank_->load_window->commit_step();
    }
    nlohmann::json placements = nlohmann::json::array();
    for (const eplb::Placement& placement : rank_->placements) {
      placements.push_back(placement.physical_to_logical());
    }
    control_.send({{"type", protocol::kHeld},
                   {"op", holding_op_},
                   {"placements", placements},
                   {"load", local_expert_load(*rank_)}});
  } else if (type == protocol::kStandby) {
    RankTransition transition =
        transition_from_json(message, rank_->num_experts, rank_->config.slots_per_rank);
    log_info("rank ", rank_->config.rank, ": preparing epoch ", transition.epoch, " as ",
             transition.new_rank < 0
                 ? std::string("a leaving rank")
                 : cat("rank ", transition.new_rank, " of ", transition.num_ranks));
    if (transition.new_rank >= 0) standby_ = std::make_unique<StandbyGroup>(*rank_, transition);
    standby_reported_ = false;
    transition_ = std::move(transition);
  } else if (type == protocol::kCommit) {
    commit_op_ = message.at("op").get<uint64_t>();
  } else if (type == protocol::kRollback) {
    const uint64_t op = message.at("op").get<uint64_t>();
    log_info("rank ", rank_->config.rank, ": transition ", op, " rolled back");
    if (standby_ != nullptr) abandoned_.push_back(std::move(standby_));
    transition_.reset();
    if (holding_op_ == op) holding_op_ = 0;
    if (commit_op_ == op) commit_op_ = 0;
  }
}

void Worker::report_committed(uint64_t op, const CommitReport& report) {
  control_.send({{"type", protocol::kCommitted},
                 {"op", op},
                 {"rank", rank_->config.rank},
                 {"warm_ups", rank_->engine->runner().num_warm_ups()},
                 {"bytes_moved", report.bytes_moved},
                 {"move_seconds", report.move_seconds},
                 {"warm_seconds", report.warm_seconds},
                 {"pause_seconds", report.pause_seconds}});
}

bool Worker::commit() {
  const auto paused = Clock::now();
  TIDAL_CHECK(transition_ && transition_->op == commit_op_, "commit of operation ", commit_op_,
              " without its standby");
  const RankTransition transition = *transition_;
  stall_for_tests("TIDAL_TEST_COMMIT_STALL_MS");
  CommitReport report;
  // The counters hold real steps since their last read; the warm-up below zeroes them.
  if (rank_->load_window) rank_->executor->collect_load(*rank_->backend);
  // The graphs hold collectives of the old epoch's communicator, which closes below (staying) or
  // with this process (leaving); NCCL does not finalise a communicator whose captured work is
  // still held, and the new epoch captures afresh anyway.
  rank_->engine->release_graphs();
  move_for_transition(*rank_, transition, report);
  if (transition.new_rank < 0) {
    // Leaving: every request goes back to the front, which continues it on a staying rank.
    nlohmann::json requests = nlohmann::json::array();
    for (const RequestHandoff& handoff : rank_->engine->release_all()) {
      requests.push_back(protocol::to_json(handoff));
    }
    log_info("rank ", rank_->config.rank, ": leaving at epoch ", transition.epoch,
             ", handing back ", requests.size(), " requests");
    stall_for_tests("TIDAL_TEST_HANDOFF_STALL_MS");
    control_.send({{"type", protocol::kHandoff},
                   {"op", transition.op},
                   {"requests", requests},
                   {"warm_ups", rank_->engine->runner().num_warm_ups()},
                   {"bytes_moved", report.bytes_moved},
                   {"move_seconds", report.move_seconds}});
    return false;
  }
  // The rendezvous finished during prepare (the front commits only then), so this returns at once.
  while (!standby_->done()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  switch_epoch(*rank_, transition, standby_->take());
  standby_.reset();
  transition_.reset();
  holding_op_ = 0;
  commit_op_ = 0;
  report.warm_seconds = warm_and_capture(*rank_);
  report.pause_seconds = seconds_since(paused);
  log_info("rank ", rank_->config.rank, "/", rank_->config.num_ranks, ": epoch ",
           rank_->config.epoch, " committed (moved ", report.bytes_moved, " bytes in ",
           report.move_seconds, " s, warm_and_capture ", report.warm_seconds, " s, paused ",
           report.pause_seconds, " s)");
  report_committed(transition.op, report);
  return true;
}

void Worker::break_epoch(const std::string& why) {
  log_line(LogLevel::kError, cat("rank ", rank_->config.rank, "/", rank_->config.num_ranks,
                                 ": epoch ", rank_->config.epoch, " broke: ", why));
  broken_ = true;
  // Graphs hold the broken group's collectives; the requests go back to the front's ledger
  // (their state here may be half a step ahead of what the clients have, and recomputing from
  // the ledger is what every survivor does alike).
  rank_->engine->release_graphs();
  const size_t dropped = rank_->engine->release_all().size();
  if (standby_ != nullptr) abandoned_.push_back(std::move(standby_));
  transition_.reset();
  holding_op_ = 0;
  commit_op_ = 0;
  rank_->eplb_pending.clear();  // planned for the ranks of the broken epoch
  // Closing the group's connections now makes peers still blocked on this rank fail at once.
  std::unique_ptr<Communicator> closed = make_broken_communicator(
      rank_->config.rank, rank_->config.num_ranks, rank_->config.epoch, why);
  rank_->executor->set_group(*closed);
  rank_->engine->set_dp_group(closed.get());
  rank_->group = std::move(closed);
  control_.send({{"type", protocol::kBroken},
                 {"epoch", rank_->config.epoch},
                 {"message", why},
                 {"dropped", dropped},
                 {"held", held_experts(*rank_)}});
}

void Worker::recover(const nlohmann::json& message) {
  const auto started = Clock::now();
  const RankTransition transition =
      transition_from_json(message, rank_->num_experts, rank_->config.slots_per_rank);
  log_info("rank ", rank_->config.rank, ": recovering as rank ", transition.new_rank, " of ",
           transition.num_ranks, " (epoch ", transition.epoch, ")");
  try {
    std::unique_ptr<Communicator> group = make_epoch_group(
        *rank_->backend, *rank_->store, transition.new_rank, transition.num_ranks, transition.epoch,
        std::chrono::milliseconds(rank_->config.comm_timeout_ms), rank_->lost_epoch);
    // Experts no survivor holds, read back from the checkpoint into this rank's assigned slots
    // (the slots' tables switch below, so nothing routes to them half-written).
    int64_t bytes_loaded = 0;
    for (const nlohmann::json& load : message.at("loads")) {
      const auto layer = load.at(0).get<size_t>();
      rank_->layer_in_motion.at(layer) = true;
      bytes_loaded += static_cast<int64_t>(
          rank_->model->load_expert(layer, load.at(1).get<int64_t>(), load.at(2).get<int32_t>()));
    }
    rank_->backend->synchronize();
    const double load_seconds = seconds_since(started);
    switch_epoch(*rank_, transition, std::move(group));
    broken_ = false;
    const double warm_seconds = warm_and_capture(*rank_);
    log_info("rank ", rank_->config.rank, "/", rank_->config.num_ranks, ": recovered in epoch ",
             rank_->config.epoch, " (", bytes_loaded, " bytes read back in ", load_seconds,
             " s, warm_and_capture ", warm_seconds, " s)");
    control_.send({{"type", protocol::kRecovered},
                   {"op", transition.op},
                   {"warm_ups", rank_->engine->runner().num_warm_ups()},
                   {"bytes_loaded", bytes_loaded},
                   {"load_seconds", load_seconds},
                   {"warm_seconds", warm_seconds}});
  } catch (const CommError& error) {
    // Another survivor was lost on the way: report again; the front plans with who is left.
    break_epoch(error.what());
  }
}

bool Worker::await_commit() {
  const auto joined = Clock::now();
  for (;;) {
    const std::optional<nlohmann::json> message = control_.receive(std::chrono::milliseconds(100));
    if (!message) {
      // The coordinator commits or rolls back within its prepare timeout; past that (and a
      // margin for the commit itself) it is gone.
      if (std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - joined).count() >
          rank_->config.prepare_timeout_ms + rank_->config.comm_timeout_ms) {
        TIDAL_FAIL("joined epoch ", rank_->config.epoch, " but no commit came");
      }
      continue;
    }
    const std::string type = message->at("type").get<std::string>();
    if (type == protocol::kShutdown || type == protocol::kRollback) return false;
    if (type == protocol::kCommit) {
      commit_op_ = message->at("op").get<uint64_t>();
      break;
    }
    handle(*message);  // adopted requests may arrive before the commit reaches this rank
    // A rank failed during the commit: this one joins the survivors' recovery instead.
    if (broken_) return true;
  }
  CommitReport report;
  try {
    report.warm_seconds = warm_and_capture(*rank_);
  } catch (const CommError& error) {
    break_epoch(error.what());
    return true;
  }
  report.pause_seconds = report.warm_seconds;
  log_info("rank ", rank_->config.rank, "/", rank_->config.num_ranks, ": joined epoch ",
           rank_->config.epoch, " (warm_and_capture ", report.warm_seconds, " s)");
  report_committed(commit_op_, report);
  commit_op_ = 0;
  return true;
}

bool Worker::step_once() {
  Engine& engine = *rank_->engine;
  // Every rank agrees, at the same point: whether to step, whether to stop, whether load
  // balancing is held, and whether every rank has the commit of a transition (a minimum,
  // taken as the maximum of negated values).
  int64_t flags[4] = {engine.has_work() ? 1 : 0, stop_requested_ ? 1 : 0, holding_op_ != 0 ? 1 : 0,
                      -static_cast<int64_t>(commit_op_)};
  PhaseClock clock;
  rank_->group->all_reduce_max(flags);
  const double agree_seconds = clock.lap();
  if (flags[1] != 0) return false;
  if (-flags[3] > 0) {
    if (!commit()) throw LeaveGroup{};
    return true;
  }
  if (flags[0] == 0) {
    // Nobody has work: wait a little for a command so idle ranks do not spin.
    if (std::optional<nlohmann::json> message = control_.receive(std::chrono::milliseconds(2))) {
      handle(*message);
    }
    return true;
  }
  step_seconds_.agree += agree_seconds;  // idle rounds are not step time
  std::vector<RequestOutput> outputs = engine.step();
  ++steps_;
  clock.lap();  // the engine timed its own phases
  if (!outputs.empty() || steps_ % 64 == 0) send_outputs(outputs);
  step_seconds_.outputs += clock.lap();
  if (rank_->load_window) {
    // Every rank of the epoch counts the same steps and holds the same pending layers, so all
    // plan and move together; never while a transition holds the placement the coordinator
    // planned from.
    const bool plan_due = flags[2] == 0 && rank_->eplb_pending.empty() &&
                          rank_->eplb_steps + 1 >= rank_->config.eplb_interval;
    // The device counters add up across steps; reading them is a copy to the host (about a
    // tenth of a millisecond), so it happens every kLoadReadSteps steps (or every step of a
    // shorter window) and before each plan. The window then moves in chunks of that many steps.
    const int64_t read_every = std::min<int64_t>(kLoadReadSteps, rank_->config.eplb_window);
    if (plan_due || steps_ % read_every == 0) rank_->executor->collect_load(*rank_->backend);
    rank_->load_window->commit_step();
    const auto per_step = static_cast<size_t>(rank_->config.eplb_layers_per_step);
    if (flags[2] == 0 && !rank_->eplb_pending.empty()) {
      move_pending_layers(*rank_, eplb_, per_step);
      if (rank_->eplb_pending.empty()) send_outputs({});
    } else if (++rank_->eplb_steps >= rank_->config.eplb_interval && flags[2] == 0) {
      rank_->eplb_steps = 0;
      plan_rebalance(*rank_, eplb_);
      move_pending_layers(*rank_, eplb_, per_step);
      if (rank_->eplb_pending.empty()) send_outputs({});
    }
    step_seconds_.balance += clock.lap();
  }
  return true;
}

int Worker::run() {
  for (;;) {
    // Commands first, all of them, without waiting.
    while (std::optional<nlohmann::json> message = control_.receive(std::chrono::milliseconds(0))) {
      handle(*message);
    }
    // Rolled-back standbys whose rendezvous has ended (formed or failed) are closed now, not at
    // exit, so repeated rollbacks do not pile up threads and communicators.
    std::erase_if(abandoned_,
                  [](const std::unique_ptr<StandbyGroup>& standby) { return standby->done(); });
    if (standby_ != nullptr && standby_->done() && !standby_reported_) {
      standby_reported_ = true;
      const std::string error = standby_->error();
      control_.send({{"type", protocol::kStandbyReady},
                     {"op", standby_->op()},
                     {"ok", error.empty()},
                     {"message", error}});
    }
    if (transition_ && transition_->new_rank < 0 && !standby_reported_) {
      standby_reported_ = true;  // a leaving rank forms nothing
      control_.send({{"type", protocol::kStandbyReady},
                     {"op", transition_->op},
                     {"ok", true},
                     {"message", ""}});
    }
    if (broken_) {
      // Nothing steps until the survivors' epoch forms; wait for the front's kRecover.
      if (stop_requested_) break;
      if (std::optional<nlohmann::json> message = control_.receive(std::chrono::milliseconds(2))) {
        handle(*message);
      }
      continue;
    }
    try {
      if (!step_once()) break;
    } catch (const CommError& error) {
      break_epoch(error.what());
    } catch (const LeaveGroup&) {
      return exit_code(0);
    }
  }
  log_info("rank ", rank_->config.rank, " shut down after ", steps_, " steps");
  return exit_code(0);
}

int Worker::exit_code(int code) {
  // A standby whose rendezvous waits on a peer that died in the middle of its handshake (a
  // joining rank killed by a rollback just after it started connecting) ends only at the
  // communicator timeout, a minute; destroying it joins its thread. The process is done and the
  // system frees what that thread holds, so the rank exits without waiting for it.
  auto lingering = [this] {
    return (standby_ != nullptr && !standby_->done()) ||
           std::any_of(
               abandoned_.begin(), abandoned_.end(),
               [](const std::unique_ptr<StandbyGroup>& standby) { return !standby->done(); });
  };
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  while (lingering() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!lingering()) return code;
  log_warning("rank ", rank_->config.rank,
              ": a standby rendezvous is still waiting for a peer; exiting without it");
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace

int run_rank_worker(const RankWorkerOptions& options) {
  ControlChannel control(options.control_endpoint, options.rank);
  // From before the hello on: the front's death ends this process even while it loads.
  const RankHeartbeat heartbeat({.control_endpoint = options.control_endpoint,
                                 .identity = control.identity(),
                                 .secret = options.secret,
                                 .lifeline_fd = options.lifeline_fd});
  control.send({{"type", protocol::kHello},
                {"rank", options.rank},
                {"spawn_ticket", options.spawn_ticket},
                {"secret", options.secret}});
  int rank_idx = options.rank;
  try {
    std::optional<nlohmann::json> message = control.receive(std::chrono::seconds(120));
    if (message && message->at("type") == protocol::kRefused) {
      // Not a member: nothing to report back, the front has forgotten this process already.
      log_line(LogLevel::kError, cat("the front at ", options.control_endpoint,
                                     " refused this rank: ", message->value("message", "")));
      return kRankExitRefused;
    }
    if (!message || message->at("type") != protocol::kConfig) {
      TIDAL_FAIL("rank ", options.rank, ": no configuration from the front at ",
                 options.control_endpoint);
    }
    const protocol::RankConfig config = protocol::config_from_json(*message);
    rank_idx = config.rank;  // assigned by the coordinator when not asked for
    if (config.joining) stall_for_tests("TIDAL_TEST_JOIN_STALL_MS");
    std::unique_ptr<RankState> rank = join_rank(config, &heartbeat.lost_epoch());
    // With its load, so /metrics shows the rank's KV cache capacity before any traffic.
    control.send({{"type", protocol::kReady},
                  {"rank", rank_idx},
                  {"max_model_len", rank->engine->max_model_len()},
                  {"warm_ups", rank->engine->runner().num_warm_ups()},
                  {"load", protocol::to_json(load_of(*rank->engine))}});
    log_info("rank ", rank_idx, "/", config.num_ranks, config.joining ? " joined" : " ready",
             " (epoch ", config.epoch, ")");
    Worker worker(control, std::move(rank));
    if (config.joining && !worker.await_commit()) return 0;
    return worker.run();
  } catch (const std::exception& error) {
    log_line(LogLevel::kError, cat("rank ", rank_idx, " failed: ", error.what()));
    control.send({{"type", protocol::kFailed}, {"rank", rank_idx}, {"message", error.what()}});
    return kRankExitFailed;
  }
}

}  // namespace tidal
