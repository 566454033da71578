// EngineClient: what the API server needs from "the engine", whether it is one in-process
// EngineLoop or a router over many rank processes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/output_queue.h"
#include "engine/sampling_params.h"
#include "engine/scale_control.h"

namespace tidal {

// Where a rank's steps spent their wall time since start-up, in seconds: the served step's cost
// beyond the model itself shows up here.
struct StepSeconds {
  double schedule = 0;  // choosing the batch
  double agree = 0;     // agreeing with the group: whether to step, then the step's shape
  double forward = 0;   // the model's step and the draw, until the tokens are on the host
  double prefill = 0;   // the same for steps that computed more than each sequence's next token
  double outputs = 0;   // stop checks, detokenizing, handing the outputs over
  double balance = 0;   // expert load: reading the counters, planning, moving weights

  StepSeconds& operator+=(const StepSeconds& other) {
    schedule += other.schedule;
    agree += other.agree;
    forward += other.forward;
    prefill += other.prefill;
    outputs += other.outputs;
    balance += other.balance;
    return *this;
  }
};

// A snapshot of one rank's engine, refreshed after every step.
struct EngineLoad {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_kv_blocks = 0;
  int64_t num_free_kv_blocks = 0;
  int64_t num_preemptions = 0;
  int64_t num_steps = 0;
  int64_t num_warm_ups = 0;
  int64_t num_decode_graphs = 0;       // CUDA graphs held now (one per decode batch-size bucket)
  int64_t num_graph_steps = 0;         // steps run by replaying one
  int64_t num_outstanding_tokens = 0;  // prompt + max output tokens of unfinished requests
  // Expert load balancing, since start-up (zero and empty while it is off or has not run).
  int64_t eplb_rebalances = 0;
  int64_t eplb_bytes_moved = 0;  // expert weight bytes this rank received or copied locally
  double eplb_seconds = 0;       // time this rank spent rebalancing
  double eplb_longest_pause_seconds = 0;  // the longest single pause of it (one batch of layers)
  // Per MoE layer, over the load window of the last rebalance: mean rank load / max rank load
  // with the placement before it and after it (1 is perfect balance). The same on every rank.
  std::vector<double> eplb_balancedness_before = {};
  std::vector<double> eplb_balancedness_after = {};
  StepSeconds step_seconds = {};
};

class EngineClient {
 public:
  virtual ~EngineClient() = default;
  // Queues a request whose outputs go to `queue`; an error Status says why it was refused.
  virtual Status submit(const std::string& id, std::vector<int32_t> prompt_ids,
                        SamplingParams params, std::shared_ptr<OutputQueue> queue) = 0;
  // Aborts a request if it still runs; its queue receives a final kAbort output.
  virtual void abort(const std::string& id) = 0;
  // One snapshot per rank, in rank order.
  virtual std::vector<EngineLoad> loads() const = 0;
  virtual int64_t max_model_len() const = 0;
  // Whether a request submitted now can be served (false while recovering from a failure, or
  // once the engine has failed): what /health reports.
  virtual bool can_serve() const { return true; }
  // The elastic controls when this engine can change its rank count; nullptr when it cannot.
  virtual ScaleControl* scale_control() { return nullptr; }
};

}  // namespace tidal
