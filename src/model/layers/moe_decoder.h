// Qwen3-MoE (Qwen3MoeForCausalLM): the decoder stack, its weights, and one forward step.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/workspace.h"
#include "model/forward_batch.h"
#include "model/layers/attention.h"
#include "model/layers/expert_executor.h"
#include "model/layers/feed_forward.h"
#include "model/loader/model_config.h"
#include "model/weight_store.h"

namespace tidal {

// Which experts this rank holds and how routed tokens reach them.
struct ModelShard {
  std::vector<int32_t> slot_experts;  // logical expert of each local slot; empty: slot e = expert e
  // Per MoE layer (in MoE layer order), when layers differ (expert load balancing re-places each
  // layer on its own); empty: every layer uses slot_experts.
  std::vector<std::vector<int32_t>> slot_experts_by_moe_layer = {};
  ExpertExecutor* executor = nullptr;  // nullptr: every expert is local
};

class Qwen3MoeModel {
 public:
  // Loads every weight from `checkpoint` onto `backend`; throws tidal::Error naming the tensor
  // and file on any missing or mis-shaped weight.
  Qwen3MoeModel(Backend& backend, ModelConfig config, Checkpoint checkpoint, ModelShard shard = {});

  const ModelConfig& config() const { return config_; }
  // Whether forward() may be recorded into a CUDA graph (its experts are reached without a host
  // synchronisation).
  bool capturable() const { return executor_->capturable(); }

  // Runs the batch through every layer (storing its keys and values in `kv_cache`, one entry
  // per layer) and returns the logits [num_samples, vocab] of batch.sample_rows, in f32, from
  // the workspace.
  Tensor forward(const ForwardBatch& batch, std::span<const KvCacheLayer> kv_cache,
                 Workspace& workspace);

  // This rank's expert slot buffers of each MoE layer, in MoE layer order. Expert load balancing
  // copies weights into these slots in place: the buffers never move, so their addresses (which
  // captured graphs read) stay valid.
  std::vector<ExpertSlots> moe_expert_slots() const;
  // Reads logical expert `expert` of MoE layer `moe_layer` from the checkpoint (memory-mapped, or
  // the dummy weights' generator) into local slot `slot`, in place. Returns the bytes written.
  size_t load_expert(size_t moe_layer, int64_t slot, int32_t expert);

 private:
  struct Layer {
    Tensor input_norm;
    Tensor post_attention_norm;
    AttentionWeights attention;
    bool is_moe = false;
    MoeWeights moe;
    DenseMlpWeights mlp;
  };

  Backend* backend_;
  ModelConfig config_;
  LocalExpertExecutor local_executor_;
  ExpertExecutor* executor_;
  WeightStore store_;
  Tensor embed_tokens_;
  std::vector<Layer> layers_;
  Tensor final_norm_;
  Tensor lm_head_;
};

}  // namespace tidal
