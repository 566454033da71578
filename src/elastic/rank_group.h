// RankGroup: the front's side of a group of rank processes, and the coordinator of its elastic
// transitions. It serves the rendezvous store and the control socket, starts local ranks (or
// waits for ranks started by hand), hands each its configuration, and acts as the EngineClient:
// it places each request on the rank with the fewest outstanding tokens and routes the outputs
// back.
//
// A transition (scale to N ranks), in the coordinator's order:
//   prepare (serving continues)
//     1. hold: every rank pauses load balancing and reports its placement and expert load;
//     2. plan (plan_scale): leaving ranks, renumbering, each layer's placement at N;
//     3. joining ranks start, load their slots' weights, allocate their KV cache and form the
//        next epoch's communicator with the staying ranks, which form it in the background;
//        nobody warms up yet;
//   commit (the commit point: from here the transition completes or the group fails)
//     4. every old rank, at one step agreed over the old communicator, moves expert weights;
//        leaving ranks hand their requests back (each continues on a staying rank, its stream
//        unbroken) and exit; staying ranks switch communicator and placement;
//     5. every rank of the new epoch runs warm_and_capture once, together, and resumes;
//     6. the router learns the new rank set.
//   A failure before the commit point (a joining rank dies, fails or times out, a communicator
//   does not form) rolls back: the joining processes are killed, the staying ranks drop their
//   standby communicator, and the group keeps serving at its old size and epoch.
//
// A rank that dies, reports a failure, or sends no heartbeat for rank_timeout (hung, stopped) is
// killed and recovered from as an unplanned scale-down (rank_group_failure.cpp): the survivors
// give up the broken epoch and report what their expert slots hold, the coordinator plans the
// survivors' placement (experts the lost ranks held alone are read back from the checkpoint),
// they form the next epoch and warm up once, and every request in flight continues from the
// front's ledger (prompt, sampling parameters and seed, tokens and text already sent), its stream
// unbroken. With OnRankFailure::kReplace a normal scale-up then returns the group to its size.
// A transition that a failure interrupts rolls back (prepare) or ends failed (commit) and the
// recovery takes over.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "elastic/scale_plan.h"
#include "engine/engine.h"
#include "engine/engine_client.h"
#include "engine/scale_control.h"
#include "model/dummy_weights.h"

namespace tidal {

class KvStoreServer;
class KvStoreClient;

class ControlSocket;

enum class OnRankFailure { kShrink, kReplace };

struct RankGroupOptions {
  std::string model_directory;
  std::string device = "cpu";
  int num_ranks = 1;
  int slots_per_rank = 0;  // 0: ceil((experts + num_redundant_experts) / ranks)
  int num_redundant_experts = 0;
  // The most ranks the group may scale to: GPUs on this host for cuda (0: all of them), CPU rank
  // places for cpu (0: max(num_ranks, 8)). Placement tables are sized for it once.
  int max_num_ranks = 0;
  int num_local_ranks = -1;  // ranks this process starts; -1: all; the rest join by hand
  // Joining ranks of a scale-up: started here (true), or started by whoever runs the cluster
  // with `tidal rank --coordinator ...` while the transition prepares (false, e.g. other hosts).
  bool spawn_joining_ranks = true;
  std::string bind_host = "127.0.0.1";
  int control_port = 0;  // 0: any free port (the endpoint is logged and in control_endpoint())
  std::string rank_binary = "/proc/self/exe";
  EngineOptions engine;  // every rank's scheduler and KV cache sizing
  std::chrono::milliseconds start_timeout = std::chrono::seconds(120);
  std::chrono::milliseconds comm_timeout = std::chrono::seconds(60);
  // Bound on a transition's prepare (joining ranks loading and forming the communicator); past
  // it the transition rolls back.
  std::chrono::milliseconds prepare_timeout = std::chrono::seconds(120);
  // Dummy weights of a config's shapes instead of model_directory's checkpoint (which then only
  // provides the tokenizer).
  std::optional<DummyModelOptions> dummy = std::nullopt;
  // Expert load balancing on the ranks (see RankConfig).
  bool enable_eplb = false;
  int eplb_window = 1000;
  int eplb_interval = 3000;
  int eplb_layers_per_step = 0;
  // A rank silent this long (no heartbeat: stopped, hung, unreachable) is declared failed.
  std::chrono::milliseconds rank_timeout = std::chrono::seconds(5);
  // After recovering from a failure: stay smaller, or scale back up to the size asked for.
  OnRankFailure on_rank_failure = OnRankFailure::kReplace;
  // What a rank must show to be admitted (rank_secret.h); ranks this process starts get it in
  // their environment. Empty: a new one, which only they know.
  std::string rank_secret = {};
};

class RankGroup final : public EngineClient, public ScaleControl {
 public:
  // Returns once every rank is ready; throws tidal::Error (after stopping what it started) when
  // a rank fails to join or the start times out.
  explicit RankGroup(RankGroupOptions options);
  ~RankGroup() override;  // shuts every rank down and reaps local ones; never throws
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  Status submit(const std::string& id, std::vector<int32_t> prompt_ids, SamplingParams params,
                std::shared_ptr<OutputQueue> queue) override;
  void abort(const std::string& id) override;
  std::vector<EngineLoad> loads() const override;
  int64_t max_model_len() const override { return max_model_len_; }
  ScaleControl* scale_control() override { return this; }
  // Not while a rank failure is being recovered from, nor once the group has failed.
  bool can_serve() const override;

  Result<std::string> start_scale(const ScaleRequest& request) override;
  std::optional<nlohmann::json> scale_operation(const std::string& id) const override;
  nlohmann::json topology() const override;
  bool is_scaling() const override;
  ScaleStats scale_stats() const override;

  const std::string& control_endpoint() const { return control_endpoint_; }
  int num_ranks() const;

 private:
  // One rank process, known from its hello on. Its rank index is its position in ranks_, which
  // changes at transitions; its member id never does.
  struct Member {
    int id = 0;
    int place = -1;        // the rank index it was started for (matched against its hello)
    std::string identity;  // ZeroMQ routing id; "" until it says hello
    std::string device;    // e.g. "cpu", "cuda:2"
    int pid = -1;          // a local process of ours; -1 for one started by hand (or reaped)
    bool spawned = false;  // we forked it: its hello must show its ticket (the member id)
    bool joining = false;  // started for a transition that has not committed yet
    bool leaving = false;  // leaves at the commit in progress: no new requests
    bool ready = false;
    std::string failure;  // what it reported before failing
    EngineLoad load;
    int64_t outstanding_tokens = 0;
    int64_t warm_ups = 0;
    int64_t max_model_len = 0;  // what it reported when ready
    // Failure detection and recovery.
    std::chrono::steady_clock::time_point last_heard{};  // its last heartbeat (or message)
    bool heard = false;          // a heartbeat came: from then on its silence counts
    bool exit_expected = false;  // it handed its requests back, or was told to shut down
    bool failed = false;         // lost: killed, to be dropped by the recovery
    bool broken = false;         // gave up its epoch after a peer's failure; waits for kRecover
    nlohmann::json held;         // with broken: [MoE layer][slot] what its expert slots hold
    uint64_t recovered_op = 0;   // the last recovery it completed
  };
  struct Live {
    std::shared_ptr<OutputQueue> queue;
    int member = 0;
    int64_t tokens = 0;  // prompt + max_tokens: what it adds to its rank's outstanding load
    bool abort_requested = false;
    bool accepted = false;  // a rank has taken it (its submit verdict was ok, or it was adopted)
    // The ledger: what continues it on any rank (the same as a leaving rank's hand-over).
    std::vector<int32_t> prompt_ids = {};
    SamplingParams params = {};            // with the seed the front drew when the client gave none
    std::vector<int32_t> output_ids = {};  // tokens the client has been sent
    size_t text_sent = 0;                  // bytes of text the client has been sent
  };
  struct Operation;  // one scale operation's record (rank_group_scale.cpp)

  void io_loop();
  // `peer` is the sender's address, for the log.
  void handle(const std::string& identity, const std::string& peer, const std::string& payload);
  // Whether a hello or heartbeat carries the rank secret; when not, the peer is refused (logged
  // once per peer) and false is returned.
  bool admits_locked(const std::string& identity, const std::string& peer, const char* what,
                     const nlohmann::json& message);
  // Tells the sender of a hello that it is no rank of ours, and why; it exits.
  void refuse_hello_locked(const std::string& identity, const std::string& why);
  // A warning about a peer that is no rank of ours, logged the first time only: anyone who
  // reaches the control port could otherwise fill the log.
  void warn_peer_once_locked(const std::string& identity, const std::string& peer,
                             const std::string& warning);
  void handle_transition_message_locked(Member& sender, const std::string& type,
                                        const nlohmann::json& message);
  void send_locked(int member_id, const nlohmann::json& message);
  // To the rank's heartbeat thread, which reads it even while the stepping thread is blocked.
  void send_heartbeat_locked(int member_id, const nlohmann::json& message);
  // Forks `tidal rank` for the member and records its pid. Under the lock, so that the I/O thread
  // never sees a member we started without its pid (which its hello is matched against).
  void spawn_rank_locked(Member& member);
  // Before the group first serves: kills the ranks started so far and makes fresh places for a
  // new attempt at a new epoch.
  void restart_first_ranks();
  int add_member_locked(int place, const std::string& device, bool joining);
  // The device a new rank takes: the first GPU no live member uses (cuda), else the group's.
  std::string free_device_locked() const;
  // The current rank with the fewest outstanding tokens that is not leaving (ties: lowest).
  int least_loaded_member_locked() const;
  // Continues a handed-back request on a staying rank; false when it was aborted or is gone.
  bool adopt_handoff_locked(const nlohmann::json& request);
  // Continues a live request on the least loaded rank from the ledger (its rank is gone or
  // dropped it), through adopt_handoff_locked; false when it is gone or its client gave up.
  bool resubmit_from_ledger_locked(const std::string& id);

  // Failure detection and recovery (rank_group_failure.cpp).
  // On the I/O thread: reaps exited local ranks and declares silent ones failed.
  void watch_ranks_locked();
  // kBroken and kRecovered.
  void handle_failure_message_locked(Member& sender, const std::string& type,
                                     const nlohmann::json& message);
  // A rank is lost: killed (if local and alive), logged, and a recovery is called for (or, for a
  // joining rank, its transition rolls back).
  // `what` happened (e.g. "exited"), with `detail` (e.g. "signal 9") in parentheses after it.
  void rank_lost_locked(Member& member, const std::string& what, const std::string& detail = "");
  // Recovery is called for (once per failure): /health turns 503, new requests wait, and every
  // rank hears that its epoch is lost.
  void begin_recovery_locked(const std::string& cause);
  // The thread that runs recoveries (and the replacement scale-up after them).
  void supervise();
  void run_recovery(std::unique_lock<std::mutex>& lock);
  // After a failure interrupted a commit: joiners and staying ranks become the candidates of the
  // recovery, leaving ranks are told to exit (their requests continue from the ledger).
  void prepare_recovery_after_commit_locked(Operation& operation, std::vector<int>& pids);
  // Tells every rank to stop, ends the I/O thread, reaps local ranks (SIGKILL after a grace
  // period). Idempotent; the destructor and a failed start both use it.
  void shutdown() noexcept;
  // Ends every live request with kAbort (the group can no longer serve it).
  void abort_everything_locked();
  // Ends one live request with kAbort: its queue gets the final output (with `error`, the reason
  // the client is told; empty when the client itself gave up), its rank's outstanding tokens drop
  // (when the rank is still a member). Returns the next entry.
  std::unordered_map<std::string, Live>::iterator end_aborted_locked(
      std::unordered_map<std::string, Live>::iterator it, const std::string& error);
  // Waits for a local process to exit (SIGKILL after `grace`); never throws.
  static void reap(int pid, std::chrono::milliseconds grace) noexcept;

  // What the planner needs about the current ranks (their count and outstanding tokens, which
  // only a commit changes), for `placements` of every MoE layer.
  ScalePlanInput plan_input_locked(const std::vector<std::vector<int32_t>>& placements) const;
  // The transition, on a thread of its own (rank_group_scale.cpp).
  void run_transition(std::shared_ptr<Operation> operation, ScaleRequest request);
  // Runs the phases; throws on a coordinator error (run_transition turns that into a rollback or,
  // past the commit point, a group failure). Fills what must be cleaned up outside the lock.
  void run_transition_steps(Operation& operation, const ScaleRequest& request,
                            std::unique_lock<std::mutex>& lock, std::vector<int>& pids,
                            std::vector<std::string>& delete_prefixes,
                            std::vector<std::string>& cancel_prefixes);
  // Undoes a prepare: joining processes killed (their pids added for reaping outside the lock),
  // staying ranks told to drop their standby, the epoch's rendezvous to cancel, the operation
  // marked failed.
  void rollback_locked(Operation& operation, const std::string& reason, std::vector<int>& pids,
                       std::vector<std::string>& cancel_prefixes);
  // A failure past the commit point: the group can no longer serve.
  void fail_group_locked(Operation& operation, const std::string& reason);
  nlohmann::json operation_json_locked(const Operation& operation) const;

  RankGroupOptions options_;
  int num_experts_ = 0;
  std::unique_ptr<KvStoreServer> store_;
  std::unique_ptr<KvStoreClient> store_client_;  // the coordinator's own, to drop dead epochs' keys
  std::unique_ptr<ControlSocket> control_;
  std::string control_endpoint_;
  int64_t max_model_len_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int, Member> members_;  // by member id
  int next_member_id_ = 0;
  std::vector<int> ranks_;  // rank index -> member id, for the current epoch
  uint64_t epoch_ = 0;
  uint64_t next_epoch_ = 1;  // a failed transition burns its epoch number; none is reused
  // [MoE layer][physical slot]: the placement the coordinator last planned or was told of.
  std::vector<std::vector<int32_t>> placements_;
  std::string failure_;  // first failure of the group (a rank of the current epoch)
  struct Outgoing {
    int member = 0;
    bool to_heartbeat = false;  // to the rank's heartbeat socket instead of its control socket
    std::string payload;
    std::string peer_identity = {};  // set: to this peer, no member (a refused hello)
  };
  std::deque<Outgoing> outbox_;
  std::unordered_map<std::string, std::promise<Status>> pending_submits_;
  std::unordered_map<std::string, Live> live_;
  std::atomic<bool> stopping_{false};
  std::thread io_thread_;

  std::map<std::string, std::shared_ptr<Operation>> operations_;
  std::shared_ptr<Operation> running_;  // the transition in progress, if any
  uint64_t next_operation_ = 1;
  ScaleStats stats_;
  std::mutex start_scale_mutex_;  // one start_scale at a time (it may join the last thread)
  std::atomic<bool> stopping_transition_{false};
  std::thread transition_thread_;

  bool started_ = false;  // every first rank was ready: from then on a lost rank is recovered from
  // Recovery: set from a failure until the survivors serve again.
  bool recovering_ = false;
  std::chrono::steady_clock::time_point failed_at_{};
  std::chrono::system_clock::time_point failed_at_system_{};  // the same, for records
  std::string recovery_cause_;
  std::string last_recovery_;  // the latest recovery operation's id, for /v1/admin/topology
  int desired_num_ranks_ = 0;  // what the operator asked for; `replace` returns to it
  bool replace_pending_ = false;
  std::chrono::steady_clock::time_point last_watch_{};
  int lifeline_[2] = {-1, -1};  // the ranks we start hold the read end; only we hold the write end
  // The environment of the ranks we start: ours with the rank secret, made before any fork (the
  // child of a threaded process may not allocate).
  std::vector<std::string> rank_environment_;
  // Peers that are no rank of ours and have been warned about (warn_peer_once_locked), bounded.
  std::set<std::string> warned_peers_;
  std::thread supervisor_thread_;
};

}  // namespace tidal
