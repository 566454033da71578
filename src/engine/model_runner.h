// ModelRunner: turns a scheduled batch into a ForwardBatch on the device, runs the model, and
// returns the logits of the requests that sample this step.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/workspace.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"
#include "model/arch/qwen3_moe.h"

namespace tidal {

struct StepLogits {
  std::vector<Request*> requests;  // the requests that sample, in row order
  std::vector<float> logits;       // [requests.size(), vocab] on the host
  int64_t vocab_size = 0;
  std::span<const float> row(size_t index) const {
    return {logits.data() + index * static_cast<size_t>(vocab_size),
            static_cast<size_t>(vocab_size)};
  }
};

class ModelRunner {
 public:
  ModelRunner(Backend& backend, Qwen3MoeModel& model, KvCache& kv_cache);

  StepLogits run(const std::vector<ScheduledRequest>& batch);
  // A step of zero tokens: a rank without work still takes part in every collective.
  void run_dummy();
  // Grows the workspace with the worst case (max_num_seqs sequences sharing
  // max_num_batched_tokens tokens, all sampling), then locks it.
  void warm_up(int64_t max_num_seqs, int64_t max_num_batched_tokens);

  const Workspace& workspace() const { return workspace_; }
  int64_t num_warm_ups() const { return num_warm_ups_; }

 private:
  struct HostBatch {
    std::vector<int32_t> token_ids, positions, slot_mapping;
    std::vector<int32_t> query_start{0}, context_lens, block_tables, sample_rows;
    int64_t max_blocks = 1;
    int64_t max_query_len = 0;
    int64_t max_context_len = 0;
  };
  Tensor upload(const std::vector<int32_t>& values, std::initializer_list<int64_t> shape);
  Tensor forward(const HostBatch& host);

  Backend* backend_;
  Qwen3MoeModel* model_;
  KvCache* kv_cache_;
  Workspace workspace_;
  int64_t num_warm_ups_ = 0;
};

}  // namespace tidal
