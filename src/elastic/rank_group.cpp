// RankGroup: spawn, handshake, route, shut down. Transitions are in rank_group_scale.cpp.
#include "elastic/rank_group.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <random>
#include <string_view>
#include <zmq.hpp>

#include "backend/backend.h"
#include "comm/kv_store.h"
#include "common/logging.h"
#include "common/secret_compare.h"
#include "elastic/rank_group_operation.h"
#include "elastic/rank_heartbeat.h"
#include "elastic/rank_protocol.h"
#include "elastic/rank_secret.h"
#include "eplb/placement_policy.h"
#include "model/load_model.h"

namespace tidal {
namespace protocol = rank_protocol;

// The ROUTER socket; only the I/O thread touches it (ZeroMQ sockets are not thread-safe).
class ControlSocket {
 public:
  zmq::context_t context;
  zmq::socket_t socket{context, zmq::socket_type::router};
};

namespace {

// GPUs this process may use (without linking CUDA into the front): CUDA_VISIBLE_DEVICES when set
// (the ranks inherit it, so "cuda:N" counts within it), else what the NVIDIA driver shows.
int count_host_gpus() {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    const std::string list(visible);
    if (list.empty()) return 0;
    return static_cast<int>(std::count(list.begin(), list.end(), ',')) + 1;
  }
  int count = 0;
  if (DIR* dir = ::opendir("/proc/driver/nvidia/gpus")) {
    while (const dirent* entry = ::readdir(dir)) count += entry->d_name[0] != '.';
    ::closedir(dir);
  }
  return count;
}

// Peers that are no rank of ours are remembered (to warn about each once) up to this many.
constexpr size_t kMaxWarnedPeers = 1024;

// A peer-chosen identity as it can go into the log: printable, and not too long.
std::string printable(std::string_view bytes) {
  constexpr size_t kMaxShown = 64;
  std::string shown;
  for (const char c : bytes.substr(0, kMaxShown)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      shown.push_back(c);
    } else {
      constexpr char kDigits[] = "0123456789abcdef";
      const auto byte = static_cast<unsigned char>(c);
      shown += {'\\', 'x', kDigits[byte >> 4], kDigits[byte & 0xf]};
    }
  }
  if (bytes.size() > kMaxShown) shown += "...";
  return shown;
}

// This process's environment with `name` set to `value` (replacing any value it had).
std::vector<std::string> environment_with(const std::string& name, const std::string& value) {
  std::vector<std::string> environment;
  const std::string prefix = name + "=";
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::string_view(*entry).starts_with(prefix)) continue;
    environment.emplace_back(*entry);
  }
  environment.push_back(prefix + value);
  return environment;
}

}  // namespace

RankGroup::RankGroup(RankGroupOptions options) : options_(std::move(options)) {
  TIDAL_CHECK(options_.num_ranks >= 1, "--ranks must be at least 1, got ", options_.num_ranks);
  const ModelConfig config = load_model_config(options_.model_directory, options_.dummy);
  num_experts_ = static_cast<int>(config.num_experts);
  TIDAL_CHECK(options_.num_redundant_experts >= 0, "--num-redundant-experts must be >= 0, got ",
              options_.num_redundant_experts);
  if (options_.slots_per_rank == 0) {
    const int physical = num_experts_ + options_.num_redundant_experts;
    options_.slots_per_rank = (physical + options_.num_ranks - 1) / options_.num_ranks;
  }
  if (options_.enable_eplb) {
    TIDAL_CHECK(options_.eplb_interval > 0, "--eplb-interval must be positive, got ",
                options_.eplb_interval);
    TIDAL_CHECK(options_.eplb_window > 0, "--eplb-window must be positive, got ",
                options_.eplb_window);
    TIDAL_CHECK(options_.eplb_layers_per_step >= 0, "--eplb-layers-per-step must be >= 0, got ",
                options_.eplb_layers_per_step);
  }
  if (options_.max_num_ranks == 0) {
    options_.max_num_ranks = is_cuda_device(options_.device) ? std::max(count_host_gpus(), 1)
                                                             : std::max(options_.num_ranks, 8);
  }
  TIDAL_CHECK(options_.num_ranks <= options_.max_num_ranks, "--ranks ", options_.num_ranks,
              " exceeds ", options_.max_num_ranks,
              is_cuda_device(options_.device) ? " (the GPUs of this host)" : " (--max-ranks)");
  const Status shape = eplb::check_shape(num_experts_, options_.num_ranks, options_.slots_per_rank);
  if (!shape.is_ok()) TIDAL_FAIL(shape.message());
  int num_moe_layers = 0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    num_moe_layers += config.is_moe_layer(layer) ? 1 : 0;
  }
  placements_.assign(
      static_cast<size_t>(std::max(num_moe_layers, 1)),
      eplb::initial_placement(num_experts_, options_.num_ranks, options_.slots_per_rank)
          .physical_to_logical());

  store_ = std::make_unique<KvStoreServer>(
      KvStoreServerOptions{.bind_address = cat("tcp://", options_.bind_host, ":*")});
  store_client_ = std::make_unique<KvStoreClient>(
      KvStoreClientOptions{.endpoint = store_->endpoint(), .timeout = options_.comm_timeout});
  control_ = std::make_unique<ControlSocket>();
  control_->socket.set(zmq::sockopt::linger, 0);
  control_->socket.bind(
      cat("tcp://", options_.bind_host, ":",
          options_.control_port == 0 ? std::string("*") : std::to_string(options_.control_port)));
  control_endpoint_ = control_->socket.get(zmq::sockopt::last_endpoint);
  // The lifeline: ranks we start inherit the read end; when this process dies, however it dies,
  // the write end closes and they exit (PR_SET_PDEATHSIG alone fires when the forking *thread*
  // exits, and joining ranks are forked by a transition's thread).
  TIDAL_CHECK(::pipe2(lifeline_, O_CLOEXEC) == 0, "cannot create the ranks' lifeline pipe");
  if (options_.rank_secret.empty()) options_.rank_secret = make_rank_secret();
  // In the environment, not on the command line: any user of the host can read another's
  // command line (ps), only its owner its environment.
  rank_environment_ = environment_with(kRankSecretEnv, options_.rank_secret);
  desired_num_ranks_ = options_.num_ranks;
  {
    std::lock_guard lock(mutex_);
    for (int rank = 0; rank < options_.num_ranks; ++rank) {
      ranks_.push_back(add_member_locked(
          rank, is_cuda_device(options_.device) ? cat("cuda:", rank) : options_.device, false));
    }
  }
  io_thread_ = std::thread([this] { io_loop(); });
  log_info("coordinator at ", control_endpoint_, ": ", options_.num_ranks, " ranks x ",
           options_.slots_per_rank, " expert slots (", num_experts_, " experts, up to ",
           options_.max_num_ranks, " ranks)");
  const int num_local =
      options_.num_local_ranks < 0 ? options_.num_ranks : options_.num_local_ranks;
  for (int attempt = 1;; ++attempt) {
    for (int rank = 0; rank < std::min(num_local, options_.num_ranks); ++rank) {
      std::lock_guard lock(mutex_);
      spawn_rank_locked(members_.at(ranks_[static_cast<size_t>(rank)]));
    }
    std::string failure;
    {
      std::unique_lock lock(mutex_);
      const bool all_ready = changed_.wait_for(lock, options_.start_timeout, [&] {
        return !failure_.empty() || std::all_of(ranks_.begin(), ranks_.end(),
                                                [&](int id) { return members_.at(id).ready; });
      });
      if (!failure_.empty()) {
        // A rank that exits after reporting why: its report may trail the exit by a moment.
        changed_.wait_for(lock, std::chrono::milliseconds(500),
                          [&] { return failure_.find(kReportedFailure) != std::string::npos; });
        failure = failure_;
      } else if (!all_ready) {
        failure = cat("ranks did not all join within ", options_.start_timeout.count(), " ms");
      }
    }
    if (failure.empty()) break;
    // A connection refused while the first communicator forms (seen once in a loaded CI run)
    // is retried once, by every rank, at a fresh epoch: a rendezvous cannot be resumed by one
    // rank alone. Only a group this process started whole can be started again.
    const bool refused = failure.find("Connection refused") != std::string::npos;
    if (attempt == 1 && refused && num_local >= options_.num_ranks) {
      log_warning("starting ", options_.num_ranks, " ranks: ", failure,
                  "; starting them again at a fresh epoch");
      restart_first_ranks();
      continue;
    }
    shutdown();
    TIDAL_FAIL("starting ", options_.num_ranks, " ranks failed: ", failure);
  }
  log_info("all ", options_.num_ranks, " ranks ready (max_model_len ", max_model_len_, ")");
  {
    std::lock_guard lock(mutex_);
    started_ = true;
  }
  supervisor_thread_ = std::thread([this] { supervise(); });
}

void RankGroup::restart_first_ranks() {
  std::vector<int> pids;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, member] : members_) {
      if (member.pid > 0) {
        ::kill(member.pid, SIGKILL);
        pids.push_back(member.pid);
      }
    }
    members_.clear();
    ranks_.clear();
    for (int rank = 0; rank < options_.num_ranks; ++rank) {
      ranks_.push_back(add_member_locked(
          rank, is_cuda_device(options_.device) ? cat("cuda:", rank) : options_.device, false));
    }
    epoch_ = next_epoch_++;  // the failed rendezvous's keys are never read again
    failure_.clear();
    max_model_len_ = 0;
  }
  for (const int pid : pids) reap(pid, std::chrono::seconds(10));
}

RankGroup::~RankGroup() {
  shutdown();
}

int RankGroup::num_ranks() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(ranks_.size());
}

int RankGroup::add_member_locked(int place, const std::string& device, bool joining) {
  const int id = next_member_id_++;
  Member& member = members_[id];
  member.id = id;
  member.place = place;
  member.device = device;
  member.joining = joining;
  return id;
}

void RankGroup::spawn_rank_locked(Member& member) {
  // The configuration names the device; the process only asks for its place, and shows its
  // ticket (the member id: never reused by this process) to prove which start it is.
  const std::string place_arg = std::to_string(member.place);
  const std::string ticket_arg = std::to_string(member.id);
  const std::string lifeline_arg = std::to_string(lifeline_[0]);
  std::vector<const char*> envp;
  for (const std::string& entry : rank_environment_) envp.push_back(entry.c_str());
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) TIDAL_FAIL("cannot start rank ", member.place, ": fork failed");
  if (pid == 0) {
    // The child becomes `tidal rank`. The front blocks SIGTERM and SIGINT for its signal
    // thread; a rank must not inherit that, or no signal would stop it. No PR_SET_PDEATHSIG: it
    // fires when the forking *thread* ends (a transition's), not the front; the lifeline is what
    // ties a rank to the front.
    sigset_t none;
    sigemptyset(&none);
    ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::fcntl(lifeline_[0], F_SETFD, 0);  // the read end survives the exec; the write end does not
    const char* argv[] = {"tidal",          "rank",
                          "--coordinator",  control_endpoint_.c_str(),
                          "--rank",         place_arg.c_str(),
                          "--lifeline-fd",  lifeline_arg.c_str(),
                          "--spawn-ticket", ticket_arg.c_str(),
                          nullptr};
    ::execve(options_.rank_binary.c_str(), const_cast<char* const*>(argv),
             const_cast<char* const*>(envp.data()));
    ::_exit(127);
  }
  member.pid = pid;
  member.spawned = true;
}

void RankGroup::send_locked(int member_id, const nlohmann::json& message) {
  outbox_.push_back(
      {.member = member_id, .to_heartbeat = false, .payload = protocol::encode(message)});
}

void RankGroup::send_heartbeat_locked(int member_id, const nlohmann::json& message) {
  outbox_.push_back(
      {.member = member_id, .to_heartbeat = true, .payload = protocol::encode(message)});
}

void RankGroup::io_loop() {
  zmq::socket_t& socket = control_->socket;
  auto next_watch = std::chrono::steady_clock::now();
  while (!stopping_.load()) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(1));
    if (std::chrono::steady_clock::now() >= next_watch) {
      next_watch = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
      std::lock_guard lock(mutex_);
      watch_ranks_locked();
    }
    for (;;) {
      zmq::message_t identity, payload;
      if (!socket.recv(identity, zmq::recv_flags::dontwait)) break;
      if (!socket.recv(payload, zmq::recv_flags::dontwait)) break;
      std::string peer = "address unknown";
      try {
        peer = payload.gets("Peer-Address");
      } catch (const zmq::error_t&) {  // not over TCP
      }
      try {
        handle(identity.to_string(), peer, payload.to_string());
      } catch (const std::exception& error) {
        std::lock_guard lock(mutex_);
        warn_peer_once_locked(identity.to_string(), peer,
                              cat("dropped a malformed control message: ", error.what()));
      }
    }
    std::deque<Outgoing> outbox;
    {
      std::lock_guard lock(mutex_);
      outbox.swap(outbox_);
    }
    for (const Outgoing& outgoing : outbox) {
      std::string identity = outgoing.peer_identity;
      if (identity.empty()) {
        std::lock_guard lock(mutex_);
        const auto it = members_.find(outgoing.member);
        if (it != members_.end()) identity = it->second.identity;
      }
      if (identity.empty()) continue;
      if (outgoing.to_heartbeat) identity += kHeartbeatIdentitySuffix;
      socket.send(zmq::buffer(identity), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(outgoing.payload), zmq::send_flags::none);
    }
  }
}

void RankGroup::warn_peer_once_locked(const std::string& identity, const std::string& peer,
                                      const std::string& warning) {
  // A rank's heartbeat socket counts as the rank: one warning for both.
  std::string_view key = identity;
  if (key.ends_with(kHeartbeatIdentitySuffix)) {
    key.remove_suffix(std::string_view(kHeartbeatIdentitySuffix).size());
  }
  if (warned_peers_.contains(std::string(key))) return;
  if (warned_peers_.size() >= kMaxWarnedPeers) {
    if (warned_peers_.size() == kMaxWarnedPeers) {
      log_warning("more than ", kMaxWarnedPeers,
                  " peers that are no ranks of this server; not logging the others");
      warned_peers_.insert("");  // no peer has an empty identity: a marker that this was said
    }
    return;
  }
  warned_peers_.emplace(key);
  log_warning("peer '", printable(identity), "' (", peer, "): ", warning);
}

bool RankGroup::admits_locked(const std::string& identity, const std::string& peer,
                              const char* what, const nlohmann::json& message) {
  const auto secret = message.find("secret");
  const bool has_secret = secret != message.end() && secret->is_string();
  if (has_secret && secrets_equal(options_.rank_secret, secret->get_ref<const std::string&>())) {
    return true;
  }
  const std::string why = has_secret ? "wrong rank secret" : "no rank secret";
  warn_peer_once_locked(identity, peer,
                        cat("refused its ", what, " (", why, "): it is no rank of this server"));
  if (std::string_view(what) == protocol::kHello) {
    refuse_hello_locked(identity,
                        cat(why, ": give this server's with --rank-secret-file PATH or in ",
                            kRankSecretEnv, " (its log says where it keeps it)"));
  }
  return false;
}

void RankGroup::refuse_hello_locked(const std::string& identity, const std::string& why) {
  outbox_.push_back({.member = -1,
                     .to_heartbeat = false,
                     .payload = protocol::encode({{"type", protocol::kRefused}, {"message", why}}),
                     .peer_identity = identity});
}

void RankGroup::handle(const std::string& identity, const std::string& peer,
                       const std::string& payload) {
  const nlohmann::json message = protocol::decode(payload);
  const std::string type = message.at("type").get<std::string>();
  std::unique_lock lock(mutex_);
  // Only a hello or heartbeat with the rank secret is heard from a peer that is no member; after
  // its hello, a rank is known by its socket identity, never by what it claims; a heartbeat comes
  // from the rank's own second socket, named after the first, and carries the secret each time
  // (anyone could name that socket after a rank whose heartbeat has gone quiet).
  if ((type == protocol::kHello || type == protocol::kHeartbeat) &&
      !admits_locked(identity, peer,
                     type == protocol::kHello ? protocol::kHello : protocol::kHeartbeat, message)) {
    return;
  }
  const std::string& known_as = type == protocol::kHeartbeat
                                    ? message.at("identity").get_ref<const std::string&>()
                                    : identity;
  // A heartbeat speaks only for the control socket its own identity is named after.
  if (type == protocol::kHeartbeat && identity != known_as + kHeartbeatIdentitySuffix) return;
  Member* sender = nullptr;
  for (auto& [id, member] : members_) {
    if (!known_as.empty() && member.identity == known_as) sender = &member;
  }
  if (sender != nullptr) {
    sender->last_heard = std::chrono::steady_clock::now();
    sender->heard = sender->heard || type == protocol::kHeartbeat;
  }
  if (type == protocol::kHeartbeat) return;
  if (type == protocol::kHello) {
    const int asked = message.at("rank").get<int>();
    // A process we started shows the ticket of its start; the hello of one we have since killed
    // (a start done again) may still be queued, and must not take its successor's place.
    const int ticket = message.value("spawn_ticket", -1);
    // A rank started by hand without an index takes the first place nobody of ours will ask
    // for: after the ranks this process starts, so that the two never race for a place; or,
    // when joining ranks are started outside, the first place of the scale-up in preparation.
    const int num_local =
        options_.num_local_ranks < 0 ? options_.num_ranks : options_.num_local_ranks;
    Member* place = nullptr;
    for (auto& [id, member] : members_) {
      if (!member.identity.empty()) continue;
      const bool by_hand =
          member.joining ? !options_.spawn_joining_ranks : member.place >= num_local;
      const bool fits = (asked >= 0 ? member.place == asked : (!member.spawned && by_hand)) &&
                        (member.spawned ? ticket == member.id : ticket < 0);
      if (fits && (place == nullptr || member.place < place->place)) place = &member;
    }
    if (place == nullptr) {
      const std::string why = asked >= 0
                                  ? cat("rank ", asked, " is not free")
                                  : std::string(
                                        "no place is free (a rank started by hand joins a scale-up "
                                        "with --scale-spawn external while it prepares)");
      log_warning("refused a rank hello from '", printable(identity), "' (", peer, "): ", why);
      refuse_hello_locked(identity, why);
      return;
    }
    place->identity = identity;
    const Operation* transition = running_.get();
    protocol::RankConfig config{.model_directory = options_.model_directory,
                                .dummy = options_.dummy,
                                .device = place->device,
                                .rank = place->place,
                                .num_ranks = static_cast<int>(ranks_.size()),
                                .epoch = epoch_,
                                .slots_per_rank = options_.slots_per_rank,
                                .max_num_ranks = options_.max_num_ranks,
                                .placements = placements_,
                                .joining = false,
                                .store_endpoint = store_->endpoint(),
                                .engine = options_.engine,
                                .comm_timeout_ms = options_.comm_timeout.count(),
                                .prepare_timeout_ms = options_.prepare_timeout.count(),
                                .enable_eplb = options_.enable_eplb,
                                .eplb_window = options_.eplb_window,
                                .eplb_interval = options_.eplb_interval,
                                .eplb_layers_per_step = options_.eplb_layers_per_step};
    if (place->joining) {
      TIDAL_CHECK(transition != nullptr && transition->planned, "a joining rank without a plan");
      config.num_ranks = transition->plan.new_num_ranks;
      config.epoch = transition->epoch;
      config.placements = transition->next_placements;
      config.joining = true;
      // The group's cache size, so that a joining rank allocates its cache as it joins, before
      // the commit point (sizing from its device's memory needs the collective worst-case step,
      // which only the commit runs); one that cannot fit it fails its join and the scale rolls
      // back instead of running out of memory after the commit.
      if (config.engine.num_kv_blocks == 0) {
        int64_t blocks = 0;
        for (const int id : ranks_) {
          const int64_t held = members_.at(id).load.num_kv_blocks;
          if (held > 0) blocks = blocks == 0 ? held : std::min(blocks, held);
        }
        config.engine.num_kv_blocks = blocks;
      }
    }
    log_info("rank ", place->place, place->joining ? " (joining)" : "",
             " said hello; sending its configuration");
    send_locked(place->id, protocol::to_json(config));
    return;
  }
  if (sender == nullptr) {
    warn_peer_once_locked(
        identity, peer,
        cat("dropped its '", printable(type), "' message: it is no member of the group"));
    return;
  }
  if (type == protocol::kReady) {
    sender->ready = true;
    sender->warm_ups = message.at("warm_ups").get<int64_t>();
    sender->load = protocol::load_from_json(message.at("load"));
    sender->max_model_len = message.at("max_model_len").get<int64_t>();
    // A joining rank's limit counts once its transition commits (it may still roll back).
    if (!sender->joining) {
      max_model_len_ = max_model_len_ == 0 ? sender->max_model_len
                                           : std::min(max_model_len_, sender->max_model_len);
    }
    changed_.notify_all();
  } else if (type == protocol::kFailed) {
    // The rank exits after this; a joining one's transition rolls back, any other is recovered
    // from like a rank that died.
    const std::string reported = message.at("message").get<std::string>();
    if (sender->joining) {
      sender->failure =
          cat("joining rank ", sender->place, " (member ", sender->id, "): ", reported);
      log_line(LogLevel::kError, sender->failure);
      changed_.notify_all();
      return;
    }
    rank_lost_locked(*sender, cat(kReportedFailure, reported));
  } else if (type == protocol::kBroken || type == protocol::kRecovered) {
    handle_failure_message_locked(*sender, type, message);
  } else if (type == protocol::kSubmitted) {
    const std::string id = message.at("id").get<std::string>();
    const bool ok = message.at("ok").get<bool>();
    const auto it = pending_submits_.find(id);
    if (it != pending_submits_.end()) {
      if (const auto live = live_.find(id); ok && live != live_.end()) live->second.accepted = true;
      it->second.set_value(ok ? Status::ok()
                              : Status::invalid_argument(message.at("message").get<std::string>()));
      pending_submits_.erase(it);
    } else if (!ok) {
      // An adopted request the new rank refused: nothing else can continue it.
      log_line(LogLevel::kError, cat("request ", id, " could not continue on rank ", sender->place,
                                     ": ", message.at("message").get<std::string>()));
      if (const auto live = live_.find(id); live != live_.end()) {
        end_aborted_locked(live, cat("the request could not continue on another rank: ",
                                     message.at("message").get<std::string>()));
      }
    }
  } else if (type == protocol::kOutputs) {
    for (const nlohmann::json& entry : message.at("outputs")) {
      RequestOutput output = protocol::output_from_json(entry);
      const auto it = live_.find(output.request_id);
      // Only the rank a request is on may advance it: a lost rank's last outputs can arrive after
      // its requests were continued elsewhere, and would repeat tokens the new rank sends again.
      if (it == live_.end() || it->second.member != sender->id) continue;
      // The ledger follows what the client is sent, so a recovery continues exactly from there.
      Live& live = it->second;
      live.output_ids.insert(live.output_ids.end(), output.new_token_ids.begin(),
                             output.new_token_ids.end());
      live.text_sent += output.new_text.size();
      const bool finished = output.finished();
      it->second.queue->push(std::move(output));
      if (finished) {
        members_.at(it->second.member).outstanding_tokens -= it->second.tokens;
        live_.erase(it);
      }
    }
    EngineLoad load = protocol::load_from_json(message.at("load"));
    if (!ranks_.empty() && sender->id == ranks_.front() &&
        load.eplb_rebalances > sender->load.eplb_rebalances) {
      // Every rank rebalances at the same step; rank 0's report stands for the group.
      double before = 0, after = 0;
      for (const double value : load.eplb_balancedness_before) before += value;
      for (const double value : load.eplb_balancedness_after) after += value;
      const auto layers =
          static_cast<double>(std::max<size_t>(load.eplb_balancedness_before.size(), 1));
      log_info("eplb: rebalance ", load.eplb_rebalances, " at step ", load.num_steps,
               ": balancedness (mean over ", load.eplb_balancedness_before.size(), " layers) ",
               before / layers, " -> ", after / layers, "; rank 0 moved ",
               load.eplb_bytes_moved - sender->load.eplb_bytes_moved, " bytes in ",
               load.eplb_seconds - sender->load.eplb_seconds, " s");
    }
    sender->warm_ups = load.num_warm_ups;
    sender->load = load;
  } else {
    handle_transition_message_locked(*sender, type, message);
  }
}

std::unordered_map<std::string, RankGroup::Live>::iterator RankGroup::end_aborted_locked(
    std::unordered_map<std::string, Live>::iterator it, const std::string& error) {
  RequestOutput output;
  output.request_id = it->first;
  output.finish_reason = FinishReason::kAbort;
  output.error = error;
  it->second.queue->push(std::move(output));
  if (const auto member = members_.find(it->second.member); member != members_.end()) {
    member->second.outstanding_tokens -= it->second.tokens;
  }
  return live_.erase(it);
}

void RankGroup::abort_everything_locked() {
  // Submitters still waiting for a rank's verdict get one now: no rank will send it.
  const std::string reason =
      failure_.empty() ? std::string("the server is shutting down") : failure_;
  for (auto it = live_.begin(); it != live_.end();) it = end_aborted_locked(it, reason);
  for (auto& [id, promise] : pending_submits_) {
    promise.set_value(Status(StatusCode::kUnavailable, reason));
  }
  pending_submits_.clear();
}

int RankGroup::least_loaded_member_locked() const {
  int chosen = -1;
  for (const int id : ranks_) {
    const Member& member = members_.at(id);
    if (member.leaving) continue;
    if (chosen < 0 || member.outstanding_tokens < members_.at(chosen).outstanding_tokens) {
      chosen = id;
    }
  }
  TIDAL_CHECK(chosen >= 0, "no rank can take requests");
  return chosen;
}

Status RankGroup::submit(const std::string& id, std::vector<int32_t> prompt_ids,
                         SamplingParams params, std::shared_ptr<OutputQueue> queue) {
  std::future<Status> verdict;
  if (!params.seed) {
    // The front draws the seed, so that the ledger can continue the request on any rank with
    // the draws it would have had (a draw depends on the seed and the output index only).
    thread_local std::random_device entropy;
    params.seed = (uint64_t{entropy()} << 32) ^ entropy();
  }
  {
    std::unique_lock lock(mutex_);
    // While the survivors of a rank failure re-form, new requests wait (a pause, not an error).
    if (!changed_.wait_for(lock, options_.comm_timeout * 2, [&] {
          return !recovering_ || !failure_.empty() || stopping_transition_.load();
        })) {
      return Status(StatusCode::kUnavailable,
                    cat("recovering from a rank failure (", recovery_cause_, ")"));
    }
    if (!failure_.empty()) return Status(StatusCode::kUnavailable, failure_);
    if (live_.contains(id) || pending_submits_.contains(id)) {
      return Status::invalid_argument(cat("duplicate request id '", id, "'"));
    }
    const int chosen = least_loaded_member_locked();
    const int64_t tokens = static_cast<int64_t>(prompt_ids.size()) + params.max_tokens;
    members_.at(chosen).outstanding_tokens += tokens;
    live_[id] = Live{.queue = std::move(queue),
                     .member = chosen,
                     .tokens = tokens,
                     .prompt_ids = prompt_ids,
                     .params = params};
    verdict = pending_submits_[id].get_future();
    send_locked(chosen, {{"type", protocol::kSubmit},
                         {"id", id},
                         {"prompt_ids", prompt_ids},
                         {"params", protocol::to_json(params)}});
  }
  Status status = verdict.get();
  if (!status.is_ok()) {
    std::lock_guard lock(mutex_);
    if (const auto it = live_.find(id); it != live_.end()) {
      members_.at(it->second.member).outstanding_tokens -= it->second.tokens;
      live_.erase(it);
    }
  }
  return status;
}

void RankGroup::abort(const std::string& id) {
  std::lock_guard lock(mutex_);
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  // A request handed back by a leaving rank is not sent on (see adopt_handoff_locked).
  it->second.abort_requested = true;
  send_locked(it->second.member, {{"type", protocol::kAbort}, {"id", id}});
}

std::vector<EngineLoad> RankGroup::loads() const {
  std::lock_guard lock(mutex_);
  std::vector<EngineLoad> loads;
  for (const int id : ranks_) {
    const Member& member = members_.at(id);
    EngineLoad load = member.load;
    load.num_outstanding_tokens = member.outstanding_tokens;  // the front keeps this one
    load.num_warm_ups = member.warm_ups;
    loads.push_back(std::move(load));
  }
  return loads;
}

void RankGroup::reap(int pid, std::chrono::milliseconds grace) noexcept {
  int status = 0;
  for (auto waited = std::chrono::milliseconds(0); waited < grace;
       waited += std::chrono::milliseconds(10)) {
    const int reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == pid || (reaped < 0 && errno == ECHILD)) return;  // ECHILD: reaped already
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  log_warning("rank process ", pid, " did not exit; killing it");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
}

void RankGroup::shutdown() noexcept {
  stopping_transition_ = true;
  changed_.notify_all();
  {
    std::lock_guard start_lock(start_scale_mutex_);  // start_scale also joins this thread
    if (transition_thread_.joinable()) transition_thread_.join();
  }
  if (supervisor_thread_.joinable()) supervisor_thread_.join();
  if (io_thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, member] : members_) {
        send_locked(id, {{"type", protocol::kShutdown}});
      }
      abort_everything_locked();
    }
    // Let the I/O thread deliver the shutdowns before it stops.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stopping_ = true;
    io_thread_.join();
  }
  std::vector<int> pids;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, member] : members_) {
      if (member.pid > 0) pids.push_back(member.pid);
      member.pid = -1;
    }
  }
  for (const int pid : pids) reap(pid, std::chrono::seconds(10));
  for (int& fd : lifeline_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

}  // namespace tidal
