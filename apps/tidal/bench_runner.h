// The measurements behind `tidal bench`: the card's ceilings (copy bandwidth, bf16 matmul rate)
// and the model's decode and prefill steps, each with the floor it is compared with.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/causal_lm.h"
#include "model/roofline.h"

namespace tidal::cli {

struct Ceilings {
  double copy_bytes_per_s = 0;    // device-to-device copy, bytes read plus bytes written
  double matmul_flops_per_s = 0;  // bf16 GEMM through the backend's linear (cuBLAS on CUDA)
  int64_t matmul_size = 0;        // the square GEMM's M = N = K
};

// Large enough to run well past launch overhead and several times the L2.
Ceilings measure_ceilings(Backend& backend, size_t copy_bytes, int64_t matmul_size, int iterations);

struct DecodeResult {
  int64_t batch = 0;
  int64_t context = 0;
  double step_seconds = 0;               // launched op by op
  double graph_step_seconds = 0;         // replayed as one captured graph; 0: not measured
  std::vector<int64_t> touched_experts;  // per MoE layer
  StepBytes floor_bytes;
  double floor_seconds = 0;  // floor_bytes over the copy bandwidth
};

struct PrefillResult {
  int64_t tokens = 0;
  double step_seconds = 0;
  PrefillFlops flops;
  double floor_seconds = 0;  // flops over the matmul rate
};

struct BenchPlan {
  std::vector<int64_t> batch_sizes;
  int64_t context = 1024;         // each sequence's context after the decode step
  int64_t prefill_tokens = 8192;  // 0: no prefill
  int64_t block_size = 16;
  int iterations = 20;  // timed decode steps per batch size
  int prefill_iterations = 3;
  uint64_t seed = 0;
  bool graphs = true;  // also time each decode step as a replayed graph (backends that have them)
  // The most the KV cache may take; 0: what the device has free (less a headroom for the
  // workspace and scratch a step grows).
  size_t kv_cache_bytes = 0;
};

// Routes through `inner` (local experts when null) and, while counting, records how many of
// this rank's (token, choice) pairs each logical expert got in each MoE layer. Counting reads the
// routing back to the host, so it runs outside the timed steps.
class CountingExecutor final : public ExpertExecutor {
 public:
  explicit CountingExecutor(ExpertExecutor* inner = nullptr) : inner_(inner) {}

  Tensor run(Backend& backend, Workspace& workspace, int64_t moe_layer, const Tensor& x,
             const Tensor& topk_ids, const Tensor& topk_weights, const ExpertSlots& slots,
             const Tensor& token_ids) override;

  // Graph-capturable while not counting (counting reads the routing back to the host).
  bool capturable() const override {
    return !counting_ && (inner_ == nullptr || inner_->capturable());
  }

  void start_counting() {
    counting_ = true;
    counts_.clear();
  }
  // [MoE layer][logical expert] choices since start_counting().
  std::vector<std::vector<int64_t>> stop_counting() {
    counting_ = false;
    return counts_;
  }

 private:
  ExpertExecutor* inner_;
  LocalExpertExecutor local_;
  bool counting_ = false;
  std::vector<std::vector<int64_t>> counts_;
};

// Distinct experts per MoE layer of [layer][expert] counts.
std::vector<int64_t> distinct_experts(const std::vector<std::vector<int64_t>>& counts);

// Runs a model built with `counter` as its executor on a KV cache made for the plan and filled
// with random keys and values.
class ModelBench {
 public:
  ModelBench(Backend& backend, CausalLm& model, CountingExecutor& counter,
             const BenchPlan& plan);
  ~ModelBench();
  ModelBench(const ModelBench&) = delete;
  ModelBench& operator=(const ModelBench&) = delete;

  // Makes the KV cache hold `batch` sequences of the plan's context (decode) or the prefill, when
  // that fits the device's free memory (and plan.kv_cache_bytes); otherwise says why not, and the
  // caller skips that measurement. Each measurement uses the cache from block 0 on its own, so
  // the cache is sized for one at a time.
  std::optional<std::string> fit_decode(int64_t batch);
  std::optional<std::string> fit_prefill();

  // A decode step of `batch` sequences: its time, and the [MoE layer][expert] choices of one
  // (untimed) step. With expert parallelism every rank of the group calls this together.
  struct DecodeRun {
    double step_seconds = 0;
    double graph_step_seconds = 0;
    std::vector<std::vector<int64_t>> expert_counts;
  };
  DecodeRun run_decode(int64_t batch);
  // run_decode with every expert local, beside its floor.
  DecodeResult decode(int64_t batch, const Ceilings& ceilings);
  PrefillResult prefill(const Ceilings& ceilings);

  // Decode as the engine runs it: a ModelRunner warmed up for the largest batch (which captures
  // its decode graphs), then run() on requests of the plan's context: the inputs' upload, the
  // replay of the batch's bucket and the logits' download, per batch size. The batch sizes must
  // have passed fit_decode.
  struct ServingDecode {
    int64_t num_graphs = 0;
    double capture_seconds = 0;
    std::vector<double> step_seconds;  // per batch size, in order
  };
  ServingDecode serving_decode(const std::vector<int64_t>& batch_sizes);

 private:
  struct State;
  // Reallocates the cache for `blocks` blocks of random keys and values when it fits; otherwise
  // the reason. `step_bytes`: what the step will still allocate beside it.
  std::optional<std::string> fit_kv_cache(int64_t blocks, size_t step_bytes, const char* what);
  Backend* backend_;
  CausalLm* model_;
  CountingExecutor* counter_;
  BenchPlan plan_;
  std::unique_ptr<State> state_;
  int64_t largest_decode_ = 0;  // the largest decode batch run so far
};

}  // namespace tidal::cli
