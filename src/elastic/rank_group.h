// RankGroup: the front's side of a group of rank processes. It serves the rendezvous store and
// the control socket, starts local ranks (or waits for ranks started by hand), hands each its
// configuration, and then acts as the EngineClient: it places each request on the rank with the
// fewest outstanding tokens and routes the outputs back.
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
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_client.h"

namespace tidal {

class KvStoreServer;

class ControlSocket;

struct RankGroupOptions {
  std::string model_directory;
  std::string device = "cpu";
  int num_ranks = 1;
  int slots_per_rank = 0;  // 0: ceil((experts + num_redundant_experts) / ranks)
  int num_redundant_experts = 0;
  int num_local_ranks = -1;  // ranks this process starts; -1: all; the rest join by hand
  std::string bind_host = "127.0.0.1";
  int control_port = 0;  // 0: any free port (the endpoint is logged and in control_endpoint())
  std::string rank_binary = "/proc/self/exe";
  EngineOptions engine;  // every rank's scheduler and KV cache sizing
  std::chrono::milliseconds start_timeout = std::chrono::seconds(120);
  std::chrono::milliseconds comm_timeout = std::chrono::seconds(60);
  // Expert load balancing on the ranks (see RankConfig).
  bool enable_eplb = false;
  int eplb_window = 1000;
  int eplb_interval = 3000;
};

class RankGroup final : public EngineClient {
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

  const std::string& control_endpoint() const { return control_endpoint_; }
  int num_ranks() const { return options_.num_ranks; }

 private:
  struct Live {
    std::shared_ptr<OutputQueue> queue;
    int rank = 0;
    int64_t tokens = 0;  // prompt + max_tokens: what it adds to its rank's outstanding load
  };
  void io_loop();
  void handle(const std::string& identity, const std::string& payload);
  void send_to(int rank, const std::string& payload);
  void spawn_local_ranks();
  // Tells every rank to stop, ends the I/O thread, reaps local ranks (SIGKILL after a grace
  // period). Idempotent; the destructor and a failed start both use it.
  void shutdown() noexcept;
  // Ends every live request with kAbort (the group can no longer serve it).
  void abort_everything_locked();

  RankGroupOptions options_;
  std::unique_ptr<KvStoreServer> store_;
  std::unique_ptr<ControlSocket> control_;
  std::string control_endpoint_;
  std::vector<int32_t> physical_to_logical_;
  int64_t max_model_len_ = 0;
  std::vector<int> local_pids_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> identities_;  // rank -> ZeroMQ routing id ("" until it says hello)
  std::vector<bool> ready_;
  std::string failure_;  // first failure a rank reported
  std::deque<std::pair<int, std::string>> outbox_;
  std::unordered_map<std::string, std::promise<Status>> pending_submits_;
  std::unordered_map<std::string, Live> live_;
  std::vector<EngineLoad> loads_;
  std::atomic<bool> stopping_{false};
  std::thread io_thread_;
};

}  // namespace tidal
