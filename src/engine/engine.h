// Engine: one rank's engine core. Takes requests, steps the model, and returns per-step outputs
// (new tokens, new text, logprobs, finish).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "comm/communicator.h"
#include "common/status.h"
#include "engine/block_manager.h"
#include "engine/engine_client.h"
#include "engine/kv_cache.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/request_handoff.h"
#include "engine/scheduler.h"
#include "model/arch/qwen3_moe.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {

struct EngineOptions {
  SchedulerOptions scheduler;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;  // 0: as many as kv_cache_bytes holds
  size_t kv_cache_bytes = size_t{256} << 20;
  int64_t max_model_len = 0;  // 0: min(max_position_embeddings, KV capacity)
  // The data-parallel group when this engine is one rank of many. The caller agrees with the
  // other ranks (one small all-reduce) on whether to step; a rank without work then runs a dummy
  // step so every expert-parallel collective is matched. nullptr: a single rank.
  Communicator* dp_group = nullptr;
  DecodeGraphOptions decode_graphs;  // CUDA graphs for decode steps (GPU)
};

class Engine {
 public:
  Engine(Backend& backend, Qwen3MoeModel& model, const Tokenizer& tokenizer, EngineOptions options);

  // Queues a request; an invalid_argument Status names what is wrong (empty or too long
  // prompt, bad sampling values, duplicate id).
  Status add_request(const std::string& id, std::vector<int32_t> prompt_ids, SamplingParams params);
  // Runs one step; returns an output for every request that produced tokens or finished. In a
  // data-parallel group every rank calls it in lockstep (it is collective), even without work.
  std::vector<RequestOutput> step();
  // Drops a request, freeing its KV blocks; its final output says kAbort.
  std::vector<RequestOutput> abort(const std::string& id);
  // Takes every request out of this engine (freeing their KV blocks) without finishing them, for
  // another rank to continue (see adopt()). Between steps only.
  std::vector<RequestHandoff> release_all();
  // Continues a request another rank released: it is queued like a preempted request, its KV
  // recomputed from prompt + output, and its outputs carry only tokens and text not yet sent.
  // Refused (invalid_argument) when the id is live here or the request does not fit this engine.
  Status adopt(RequestHandoff handoff);
  // Sizes and locks the workspace by running the worst-case batch: once at start-up and once
  // per elastic transition (collective in a group). Counted in runner().num_warm_ups().
  void warm_up();
  // The data-parallel group changes at an elastic transition (between steps).
  void set_dp_group(Communicator* group) { options_.dp_group = group; }

  bool has_work() const { return scheduler_.has_work(); }
  int64_t max_model_len() const { return max_model_len_; }
  const Scheduler& scheduler() const { return scheduler_; }
  const BlockManager& block_manager() const { return blocks_; }
  // Destroys the decode graphs until the next warm_up (see ModelRunner::release_graphs).
  void release_graphs() { runner_.release_graphs(); }
  const ModelRunner& runner() const { return runner_; }
  // Where this engine's steps spent their time (schedule, agree on the shape, forward, outputs).
  const StepSeconds& step_seconds() const { return step_seconds_; }

 private:
  void append_token(Request& request, const SampledToken& sampled);
  RequestOutput drain_output(Request& request, std::vector<int32_t> new_ids,
                             std::vector<TokenLogprob> new_logprobs);

  Backend* backend_;
  Qwen3MoeModel* model_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  int64_t max_model_len_ = 0;
  KvCache kv_cache_;
  BlockManager blocks_;
  Scheduler scheduler_;
  ModelRunner runner_;
  std::unordered_set<std::string> live_ids_;
  std::random_device entropy_;
  StepSeconds step_seconds_;
};

}  // namespace tidal
