// ModelRunner: turns a scheduled batch into a ForwardBatch on the device, runs the model, samples
// on the device, and returns the tokens of the requests that sample this step.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/workspace.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"
#include "kernels/sampling_layout.h"
#include "model/causal_lm.h"

namespace tidal {

// What a step drew: one SampledToken per sampling request (its token, and its logprobs when it
// asked), on the host until the next step. Only these small rows leave the device, not logits.
// A sampler row's result as the API reports it: the token, its logprob and the top alternatives.
TokenLogprob token_logprob(const SampledToken& sampled);

struct StepSamples {
  std::vector<Request*> requests;        // the requests that sample, in row order
  std::span<const SampledToken> tokens;  // tokens[i] belongs to requests[i]
};

// Decode steps (every sequence adds one token and samples it) replay CUDA graphs captured at
// warm-up, one per padded batch-size bucket, where the backend has graphs and the model's step is
// capturable (one rank, or a group whose expert parallelism routes on the device). Every other
// step (prefill, a mixed batch, a context past max_context, more banned ids than a graph holds:
// see kGraphBannedPerRow) runs eagerly; in a group all ranks
// replay or none does (GroupStep).
struct DecodeGraphOptions {
  bool enabled = true;  // false: every step eager (--enforce-eager)
  // The longest sequence, in tokens, a graph covers: its block tables are this wide, and every
  // replay uploads them (bucket x max_context / block_size entries).
  int64_t max_context = 8192;
};

class ModelRunner {
 public:
  ModelRunner(Backend& backend, CausalLm& model, KvCache& kv_cache,
              DecodeGraphOptions graph_options = {});
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  StepSamples run(const std::vector<ScheduledRequest>& batch);

  // A step of a data-parallel group. Expert parallelism's exchanges are sized by the token count,
  // so every rank runs the same number: its own tokens, then one padding sequence (tokens -1, no
  // cache slots, an empty context) for the rest. `replay`: every rank's step is a decode a graph
  // holds, so each replays the bucket of `tokens` instead.
  struct GroupStep {
    int64_t tokens = 0;
    bool replay = false;
  };
  // This rank's proposal; the group agrees on the largest token count, and on replay when all
  // propose it (an idle rank can always replay, when it has graphs).
  GroupStep propose(const std::vector<ScheduledRequest>& batch) const;
  StepSamples run(const std::vector<ScheduledRequest>& batch, const GroupStep& step);
  // A rank without work still takes part in every collective, with padding only.
  void run_dummy(const GroupStep& step);
  // warm_up_workspace, then capture_decode_graphs: what a warm-up does when the KV cache is
  // already sized.
  void warm_up(int64_t max_num_seqs, int64_t max_num_batched_tokens, int64_t max_context_len = 0);
  // Releases the decode graphs, grows the workspace with the worst case (max_num_seqs sequences
  // sharing max_num_batched_tokens tokens, all sampling, plus the largest decode graph's step
  // where graphs are captured) and locks it. It writes nothing to the KV cache and reads only
  // block 0, so it may run on a one-block cache: everything a step needs besides the cache is
  // allocated when it returns, and the engine sizes the cache from what is left.
  // `max_context_len`: the longest context a step may attend over (the engine's max_model_len),
  // which sets the widest block table.
  void warm_up_workspace(int64_t max_num_seqs, int64_t max_num_batched_tokens,
                         int64_t max_context_len = 0);
  // Captures the decode graphs afresh on the KV cache as it is now (its addresses are baked in).
  // After warm_up_workspace with at least this max_num_seqs.
  void capture_decode_graphs(int64_t max_num_seqs);
  // Whether this runner captures decode graphs (the backend has them, they are enabled and the
  // model's step is capturable).
  bool captures_graphs() const;

  // The padded batch sizes that get a decode graph: 1, 2, 4, 8, then every multiple of 8, and
  // max_num_seqs itself.
  static std::vector<int64_t> decode_graph_buckets(int64_t max_num_seqs);

  const Workspace& workspace() const { return workspace_; }
  int64_t num_warm_ups() const { return num_warm_ups_; }
  // Decode graphs held now (captured by the last warm-up), and the seconds that capture took.
  int64_t num_decode_graphs() const { return static_cast<int64_t>(graphs_.size()); }
  double last_capture_seconds() const { return last_capture_seconds_; }
  // Steps run by replaying a graph, since construction.
  int64_t num_graph_steps() const { return num_graph_steps_; }
  // Destroys the decode graphs (warm_up captures new ones). Before the communicator their
  // collectives were captured with is destroyed: NCCL waits for the graphs that hold its work.
  void release_graphs();

 private:
  struct DecodeGraph {
    int64_t num_seqs = 0;
    int64_t id = -1;
    Tensor samples;  // [num_seqs, kSampledTokenWords] I32, written by every replay
  };
  // Where a bucket's inputs sit in graph_inputs_, in int32 elements. Every bucket lays its own
  // inputs out from the start of the one buffer: replays run one at a time on the stream.
  struct GraphLayout {
    int64_t token_ids = 0, positions = 0, slot_mapping = 0, query_start = 0, context_lens = 0,
            sample_rows = 0, sampling = 0, banned = 0, block_tables = 0;
    int64_t uploaded = 0;  // the inputs above, uploaded per replay; then the drawn tokens
    int64_t samples = 0, total = 0;
  };
  GraphLayout graph_layout(int64_t num_seqs) const;
  ForwardBatch graph_batch(int64_t num_seqs) const;
  // An I32 tensor `offset` elements into `buffer` (graph inputs, eager sampling rows).
  Tensor int32_view(const DeviceBuffer& buffer, int64_t offset,
                    std::initializer_list<int64_t> shape) const;
  // Writes `batch` (all decode, at most num_seqs of them) into the bucket's inputs, the rest as
  // padding sequences: token -1 (a zero embedding), no cache slot, an empty context; greedy rows.
  void upload_graph_inputs(int64_t num_seqs, const std::vector<ScheduledRequest>& batch);
  const DecodeGraph* graph_for(const std::vector<ScheduledRequest>& batch) const;
  StepSamples replay(const DecodeGraph& graph, const std::vector<ScheduledRequest>& batch);
  // A bucket's step on its inputs in graph_inputs_: the forward pass, then the draw into its
  // samples region (returned).
  Tensor decode_graph_step(int64_t num_seqs);

  // The sampling rows of `requests` (kSamplingRowWords words each, in order) and their banned
  // ids (EOS and stop ids of the requests still short of min_tokens).
  struct HostSampling {
    std::vector<int32_t> rows;
    std::vector<int32_t> banned;
  };
  HostSampling sampling_rows(const std::vector<Request*>& requests) const;
  // Samples `logits` [requests, vocab] eagerly: uploads the rows and banned ids into
  // eager_sampling_, draws, and downloads the tokens.
  // A prompt position whose logits score the next prompt token (prompt_logprobs): its logits row.
  struct ScoringRow {
    Request* request = nullptr;
    int64_t position = 0;
    int32_t row = 0;  // in the step's tokens
  };
  // Scoring rows' results go into their requests' prompt_logprobs; the returned samples are the
  // requests' only.
  StepSamples sample_eager(std::vector<Request*> requests, const Tensor& logits,
                           const std::vector<ScoringRow>& scoring = {});
  // The first `rows` SampledTokens of `samples` (I32 words on the device) into the pinned host
  // buffer.
  std::span<const SampledToken> download_samples(const Tensor& samples, int64_t rows);
  void reserve_host_samples(size_t count);

  struct HostBatch {
    std::vector<int32_t> token_ids, positions, slot_mapping;
    std::vector<int32_t> query_start{0}, context_lens, block_tables, sample_rows;
    int64_t max_blocks = 1;
    int64_t max_query_len = 0;
    int64_t max_context_len = 0;
  };
  Tensor upload(const std::vector<int32_t>& values, std::initializer_list<int64_t> shape);
  Tensor forward(const HostBatch& host);
  // The eager path: the batch's inputs plus a padding sequence up to `total_tokens`.
  StepSamples run_eager(const std::vector<ScheduledRequest>& batch, int64_t total_tokens);
  const DecodeGraph& bucket_for(int64_t num_seqs) const;

  Backend* backend_;
  CausalLm* model_;
  KvCache* kv_cache_;
  Workspace workspace_;
  int64_t num_warm_ups_ = 0;
  DecodeGraphOptions graph_options_;
  std::vector<DecodeGraph> graphs_;  // ascending num_seqs
  DeviceBuffer graph_inputs_;
  int64_t graph_blocks_ = 0;  // block table width of every graph
  double last_capture_seconds_ = 0;
  int64_t num_graph_steps_ = 0;
  // Eager steps' sampling rows, banned ids and drawn tokens (graphs keep theirs in
  // graph_inputs_). Sized by the warm-up for the most a step can need.
  DeviceBuffer eager_sampling_;
  // Drawn tokens on the host, page-locked when the backend can.
  std::vector<SampledToken> host_samples_;
  bool host_samples_pinned_ = false;
};

}  // namespace tidal
