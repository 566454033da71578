// RankGroup: spawn, handshake, route, shut down.
#include "elastic/rank_group.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <zmq.hpp>

#include "comm/kv_store.h"
#include "common/logging.h"
#include "elastic/rank_protocol.h"
#include "eplb/placement_policy.h"
#include "model/loader/model_config.h"

namespace tidal {
namespace protocol = rank_protocol;

// The ROUTER socket; only the I/O thread touches it (ZeroMQ sockets are not thread-safe).
class ControlSocket {
 public:
  zmq::context_t context;
  zmq::socket_t socket{context, zmq::socket_type::router};
};

RankGroup::RankGroup(RankGroupOptions options)
    : options_(std::move(options)),
      identities_(static_cast<size_t>(std::max(options_.num_ranks, 1))),
      ready_(static_cast<size_t>(std::max(options_.num_ranks, 1)), false),
      loads_(static_cast<size_t>(std::max(options_.num_ranks, 1))) {
  TIDAL_CHECK(options_.num_ranks >= 1, "--ranks must be at least 1, got ", options_.num_ranks);
  const ModelConfig config = load_model_config(options_.model_directory);
  const auto experts = static_cast<int>(config.num_experts);
  TIDAL_CHECK(options_.num_redundant_experts >= 0, "--num-redundant-experts must be >= 0, got ",
              options_.num_redundant_experts);
  if (options_.slots_per_rank == 0) {
    const int physical = experts + options_.num_redundant_experts;
    options_.slots_per_rank = (physical + options_.num_ranks - 1) / options_.num_ranks;
  }
  if (options_.enable_eplb) {
    TIDAL_CHECK(options_.eplb_interval > 0, "--eplb-interval must be positive, got ",
                options_.eplb_interval);
    TIDAL_CHECK(options_.eplb_window > 0, "--eplb-window must be positive, got ",
                options_.eplb_window);
  }
  const Status shape = eplb::check_shape(experts, options_.num_ranks, options_.slots_per_rank);
  if (!shape.is_ok()) TIDAL_FAIL(shape.message());
  physical_to_logical_ =
      eplb::initial_placement(experts, options_.num_ranks, options_.slots_per_rank)
          .physical_to_logical();

  store_ = std::make_unique<KvStoreServer>(
      KvStoreServerOptions{.bind_address = cat("tcp://", options_.bind_host, ":*")});
  control_ = std::make_unique<ControlSocket>();
  control_->socket.set(zmq::sockopt::linger, 0);
  control_->socket.bind(
      cat("tcp://", options_.bind_host, ":",
          options_.control_port == 0 ? std::string("*") : std::to_string(options_.control_port)));
  control_endpoint_ = control_->socket.get(zmq::sockopt::last_endpoint);
  io_thread_ = std::thread([this] { io_loop(); });
  log_info("coordinator at ", control_endpoint_, ": ", options_.num_ranks, " ranks x ",
           options_.slots_per_rank, " expert slots (", experts, " experts)");
  spawn_local_ranks();

  std::string failure;
  {
    std::unique_lock lock(mutex_);
    const bool all_ready = changed_.wait_for(lock, options_.start_timeout, [&] {
      return !failure_.empty() ||
             std::all_of(ready_.begin(), ready_.end(), [](bool ready) { return ready; });
    });
    if (!failure_.empty()) {
      failure = failure_;
    } else if (!all_ready) {
      failure = cat("ranks did not all join within ", options_.start_timeout.count(), " ms");
    }
  }
  if (!failure.empty()) {
    shutdown();
    TIDAL_FAIL("starting ", options_.num_ranks, " ranks failed: ", failure);
  }
  log_info("all ", options_.num_ranks, " ranks ready (max_model_len ", max_model_len_, ")");
}

RankGroup::~RankGroup() {
  shutdown();
}

void RankGroup::spawn_local_ranks() {
  const int count = options_.num_local_ranks < 0 ? options_.num_ranks : options_.num_local_ranks;
  for (int rank = 0; rank < count; ++rank) {
    const std::string rank_arg = std::to_string(rank);
    const pid_t pid = ::fork();
    if (pid < 0) TIDAL_FAIL("cannot start rank ", rank, ": fork failed");
    if (pid == 0) {
      // The child: die with the front, then become `tidal rank`.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const char* argv[] = {"tidal",  "rank",           "--coordinator", control_endpoint_.c_str(),
                            "--rank", rank_arg.c_str(), nullptr};
      ::execv(options_.rank_binary.c_str(), const_cast<char* const*>(argv));
      ::_exit(127);
    }
    local_pids_.push_back(pid);
  }
}

void RankGroup::send_to(int rank, const std::string& payload) {
  {
    std::lock_guard lock(mutex_);
    outbox_.emplace_back(rank, payload);
  }
}

void RankGroup::io_loop() {
  zmq::socket_t& socket = control_->socket;
  while (!stopping_.load()) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(1));
    for (;;) {
      zmq::message_t identity, payload;
      if (!socket.recv(identity, zmq::recv_flags::dontwait)) break;
      if (!socket.recv(payload, zmq::recv_flags::dontwait)) break;
      try {
        handle(identity.to_string(), payload.to_string());
      } catch (const std::exception& error) {
        log_warning("dropped a malformed control message: ", error.what());
      }
    }
    std::deque<std::pair<int, std::string>> outbox;
    {
      std::lock_guard lock(mutex_);
      outbox.swap(outbox_);
    }
    for (auto& [rank, payload] : outbox) {
      std::string identity;
      {
        std::lock_guard lock(mutex_);
        identity = identities_[static_cast<size_t>(rank)];
      }
      if (identity.empty()) continue;
      socket.send(zmq::buffer(identity), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(payload), zmq::send_flags::none);
    }
  }
}

void RankGroup::handle(const std::string& identity, const std::string& payload) {
  const nlohmann::json message = protocol::decode(payload);
  const std::string type = message.at("type").get<std::string>();
  std::unique_lock lock(mutex_);
  // After its hello, a rank is known by its socket identity, never by what it claims.
  const auto known = std::find(identities_.begin(), identities_.end(), identity);
  const int sender =
      known == identities_.end() ? -1 : static_cast<int>(known - identities_.begin());
  if (type != protocol::kHello && sender < 0) {
    log_warning("dropped a '", type, "' message from an unknown rank");
    return;
  }
  if (type == protocol::kHello) {
    int rank = message.at("rank").get<int>();
    if (rank < 0) {
      // A rank started by hand without an index: the first free place after the ones this
      // process's own ranks will ask for, so that the two never race for a place.
      const int num_local =
          options_.num_local_ranks < 0 ? options_.num_ranks : options_.num_local_ranks;
      const auto free = std::find(identities_.begin() + std::min(num_local, options_.num_ranks),
                                  identities_.end(), std::string());
      rank = free == identities_.end() ? -1 : static_cast<int>(free - identities_.begin());
    }
    if (rank < 0 || rank >= options_.num_ranks || !identities_[rank].empty()) {
      log_warning("refused a rank hello (rank ", message.at("rank").get<int>(), "): no free place");
      return;
    }
    identities_[rank] = identity;
    log_info("rank ", rank, " said hello; sending its configuration");
    protocol::RankConfig config{.model_directory = options_.model_directory,
                                .device = options_.device,
                                .rank = rank,
                                .num_ranks = options_.num_ranks,
                                .epoch = 0,
                                .slots_per_rank = options_.slots_per_rank,
                                .physical_to_logical = physical_to_logical_,
                                .store_endpoint = store_->endpoint(),
                                .engine = options_.engine,
                                .comm_timeout_ms = options_.comm_timeout.count(),
                                .enable_eplb = options_.enable_eplb,
                                .eplb_window = options_.eplb_window,
                                .eplb_interval = options_.eplb_interval};
    outbox_.emplace_back(rank, protocol::encode(protocol::to_json(config)));
  } else if (type == protocol::kReady) {
    ready_[static_cast<size_t>(sender)] = true;
    const int64_t length = message.at("max_model_len").get<int64_t>();
    max_model_len_ = max_model_len_ == 0 ? length : std::min(max_model_len_, length);
    changed_.notify_all();
  } else if (type == protocol::kFailed) {
    const std::string reason = cat("rank ", sender, ": ", message.at("message").get<std::string>());
    log_line(LogLevel::kError, reason);
    if (failure_.empty()) failure_ = reason;
    abort_everything_locked();
    for (auto& [id, promise] : pending_submits_) {
      promise.set_value(Status(StatusCode::kUnavailable, reason));
    }
    pending_submits_.clear();
    changed_.notify_all();
  } else if (type == protocol::kSubmitted) {
    const auto it = pending_submits_.find(message.at("id").get<std::string>());
    if (it == pending_submits_.end()) return;
    it->second.set_value(message.at("ok").get<bool>()
                             ? Status::ok()
                             : Status::invalid_argument(message.at("message").get<std::string>()));
    pending_submits_.erase(it);
  } else if (type == protocol::kOutputs) {
    for (const nlohmann::json& entry : message.at("outputs")) {
      RequestOutput output = protocol::output_from_json(entry);
      const auto it = live_.find(output.request_id);
      if (it == live_.end()) continue;
      const bool finished = output.finished();
      it->second.queue->push(std::move(output));
      if (finished) {
        loads_[it->second.rank].num_outstanding_tokens -= it->second.tokens;
        live_.erase(it);
      }
    }
    EngineLoad load = protocol::load_from_json(message.at("load"));
    EngineLoad& kept = loads_[static_cast<size_t>(sender)];
    if (sender == 0 && load.eplb_rebalances > kept.eplb_rebalances) {
      // Every rank rebalances at the same step; rank 0's report stands for the group.
      double before = 0, after = 0;
      for (const double value : load.eplb_balancedness_before) before += value;
      for (const double value : load.eplb_balancedness_after) after += value;
      const auto layers =
          static_cast<double>(std::max<size_t>(load.eplb_balancedness_before.size(), 1));
      log_info("eplb: rebalance ", load.eplb_rebalances, " at step ", load.num_steps,
               ": balancedness (mean over ", load.eplb_balancedness_before.size(), " layers) ",
               before / layers, " -> ", after / layers, "; rank 0 moved ",
               load.eplb_bytes_moved - kept.eplb_bytes_moved, " bytes in ",
               load.eplb_seconds - kept.eplb_seconds, " s");
    }
    load.num_outstanding_tokens = kept.num_outstanding_tokens;  // the front keeps this one
    kept = load;
  }
}

void RankGroup::abort_everything_locked() {
  for (auto& [id, live] : live_) {
    RequestOutput output;
    output.request_id = id;
    output.finish_reason = FinishReason::kAbort;
    live.queue->push(std::move(output));
  }
  live_.clear();
}

Status RankGroup::submit(const std::string& id, std::vector<int32_t> prompt_ids,
                         SamplingParams params, std::shared_ptr<OutputQueue> queue) {
  std::future<Status> verdict;
  {
    std::lock_guard lock(mutex_);
    if (!failure_.empty()) return Status(StatusCode::kUnavailable, failure_);
    if (live_.contains(id) || pending_submits_.contains(id)) {
      return Status::invalid_argument(cat("duplicate request id '", id, "'"));
    }
    // Least outstanding tokens first; ties to the lower rank.
    int chosen = 0;
    for (int rank = 1; rank < options_.num_ranks; ++rank) {
      if (loads_[rank].num_outstanding_tokens < loads_[chosen].num_outstanding_tokens) {
        chosen = rank;
      }
    }
    const int64_t tokens = static_cast<int64_t>(prompt_ids.size()) + params.max_tokens;
    loads_[chosen].num_outstanding_tokens += tokens;
    live_[id] = Live{.queue = std::move(queue), .rank = chosen, .tokens = tokens};
    verdict = pending_submits_[id].get_future();
    outbox_.emplace_back(chosen, protocol::encode({{"type", protocol::kSubmit},
                                                   {"id", id},
                                                   {"prompt_ids", prompt_ids},
                                                   {"params", protocol::to_json(params)}}));
  }
  Status status = verdict.get();
  if (!status.is_ok()) {
    std::lock_guard lock(mutex_);
    if (const auto it = live_.find(id); it != live_.end()) {
      loads_[it->second.rank].num_outstanding_tokens -= it->second.tokens;
      live_.erase(it);
    }
  }
  return status;
}

void RankGroup::abort(const std::string& id) {
  std::lock_guard lock(mutex_);
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  outbox_.emplace_back(it->second.rank, protocol::encode({{"type", protocol::kAbort}, {"id", id}}));
}

std::vector<EngineLoad> RankGroup::loads() const {
  std::lock_guard lock(mutex_);
  return loads_;
}

void RankGroup::shutdown() noexcept {
  if (io_thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      for (int rank = 0; rank < options_.num_ranks; ++rank) {
        outbox_.emplace_back(rank, protocol::encode({{"type", protocol::kShutdown}}));
      }
      abort_everything_locked();
    }
    // Let the I/O thread deliver the shutdowns before it stops.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stopping_ = true;
    io_thread_.join();
  }
  for (const int pid : local_pids_) {
    int status = 0;
    bool exited = false;
    for (int waited_ms = 0; waited_ms < 10000 && !exited; waited_ms += 10) {
      exited = ::waitpid(pid, &status, WNOHANG) == pid;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!exited) {
      log_warning("rank process ", pid, " did not exit; killing it");
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  }
  local_pids_.clear();
}

}  // namespace tidal
