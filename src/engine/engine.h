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
#include "engine/kv_cache_plan.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/request_handoff.h"
#include "engine/scheduler.h"
#include "model/causal_lm.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {

// The CPU's KV cache budget by default: the bundled model's 2048-token requests 256 at a time, and
// several ranks on a laptop or a CI box.
inline constexpr size_t kDefaultCpuKvCacheSpace = size_t{512} << 20;

struct EngineOptions {
  SchedulerOptions scheduler;
  int64_t block_size = 16;
  // The KV cache's size (kv_cache_plan.h): num_kv_blocks, else kv_cache_bytes, else on a GPU what
  // gpu_memory_utilization of its memory leaves after the weights and the worst-case step, on the
  // CPU cpu_kvcache_space.
  int64_t num_kv_blocks = 0;
  size_t kv_cache_bytes = 0;
  double gpu_memory_utilization = 0.9;
  size_t cpu_kvcache_space = kDefaultCpuKvCacheSpace;
  int64_t max_model_len = 0;  // 0: min(max_position_embeddings, KV capacity)
  // The most ranks the group may grow to (elastic scaling): a KV cache cut from device memory
  // leaves room for the larger exchange buffers a scale-up's warm-up needs. 0: no growth.
  int64_t max_num_ranks = 0;
  // The data-parallel group when this engine is one rank of many. The caller agrees with the
  // other ranks (one small all-reduce) on whether to step; a rank without work then runs a dummy
  // step so every expert-parallel collective is matched. nullptr: a single rank.
  Communicator* dp_group = nullptr;
  DecodeGraphOptions decode_graphs;  // CUDA graphs for decode steps (GPU)
};

class Engine {
 public:
  Engine(Backend& backend, CausalLm& model, const Tokenizer& tokenizer, EngineOptions options);

  // Queues a request; an invalid_argument Status names what is wrong (empty or too long
  // prompt, bad sampling values, duplicate id).
  Status add_request(const std::string& id, std::vector<int32_t> prompt_ids, SamplingParams params);
  // add_request's checks of the prompt and the sampling values, without queueing: it reads only
  // what is fixed once the engine serves, so any thread may call it.
  Status check_request(const std::vector<int32_t>& prompt_ids, const SamplingParams& params) const;
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
  // Sizes and locks the workspace by running the worst-case batch, then captures the decode
  // graphs: once at start-up and once per elastic transition (collective in a group). Counted in
  // runner().num_warm_ups(). The first one also sizes a KV cache cut from device memory, between
  // the two (see kv_sized()).
  void warm_up();
  // The data-parallel group changes at an elastic transition (between steps).
  void set_dp_group(Communicator* group) { options_.dp_group = group; }

  bool has_work() const { return scheduler_.has_work(); }
  int64_t max_model_len() const { return max_model_len_; }
  // The KV cache's size and where it came from. Until kv_sized(), a cache cut from device memory
  // is a one-block placeholder and max_model_len() is the model's (or the requested) length.
  const KvCachePlan& kv_plan() const { return kv_plan_; }
  bool kv_sized() const { return kv_sized_; }
  const Scheduler& scheduler() const { return scheduler_; }
  const BlockManager& block_manager() const { return blocks_; }
  // Destroys the decode graphs until the next warm_up (see ModelRunner::release_graphs).
  void release_graphs() { runner_.release_graphs(); }
  const ModelRunner& runner() const { return runner_; }
  // Where this engine's steps spent their time (schedule, agree on the shape, forward, outputs).
  const StepSeconds& step_seconds() const { return step_seconds_; }

 private:
  // The engine's grammars (structured output), made at the first request that has one.
  GrammarEngine& grammars();
  // The plan known at construction: the real one, or a one-block placeholder when the size is
  // cut from device memory after the worst case has run.
  KvCachePlan initial_kv_plan() const;
  // Sets max_model_len_ for kv_plan_ (throwing when the requested length does not fit) and logs
  // the cache's size.
  void settle_kv_cache();
  // Cuts the KV cache from the device memory the weights and the warm-up left, and reallocates it.
  void size_kv_from_device_memory(const MemoryInfo& before_warm_up);
  void append_token(Request& request, const SampledToken& sampled);
  RequestOutput drain_output(Request& request, std::vector<int32_t> new_ids,
                             std::vector<TokenLogprob> new_logprobs);

  Backend* backend_;
  CausalLm* model_;
  const Tokenizer* tokenizer_;
  std::unique_ptr<GrammarEngine> grammars_;  // structured output's, made when first needed
  EngineOptions options_;
  int64_t max_model_len_ = 0;
  KvCachePlan kv_plan_;
  bool kv_sized_ = false;
  KvCache kv_cache_;
  BlockManager blocks_;
  Scheduler scheduler_;
  ModelRunner runner_;
  std::unordered_set<std::string> live_ids_;
  std::random_device entropy_;
  StepSeconds step_seconds_;
};

}  // namespace tidal
