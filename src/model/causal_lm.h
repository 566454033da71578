// CausalLm: what the engine, ModelRunner, elastic scaling, expert load balancing and tidal bench
// see of a model, whatever its family. A family (src/model/arch/<family>/) implements it and
// registers in model/model_family.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/workspace.h"
#include "model/forward_batch.h"
#include "model/layers/expert_executor.h"
#include "model/model_config.h"

namespace tidal {

// Which experts this rank holds and how routed tokens reach them.
struct ModelShard {
  std::vector<int32_t> slot_experts;  // logical expert of each local slot; empty: slot e = expert e
  // Per MoE layer (in MoE layer order), when layers differ (expert load balancing re-places each
  // layer on its own); empty: every layer uses slot_experts.
  std::vector<std::vector<int32_t>> slot_experts_by_moe_layer = {};
  ExpertExecutor* executor = nullptr;  // nullptr: every expert is local
};

class CausalLm {
 public:
  virtual ~CausalLm() = default;

  virtual const ModelConfig& config() const = 0;
  // Whether forward() may be recorded into a CUDA graph (its experts are reached without a host
  // synchronisation).
  virtual bool capturable() const = 0;

  // Runs the batch through every layer (storing its keys and values in `kv_cache`, one entry
  // per layer) and returns the logits [num_samples, vocab] of batch.sample_rows, in f32, from
  // the workspace.
  virtual Tensor forward(const ForwardBatch& batch, std::span<const KvCacheLayer> kv_cache,
                         Workspace& workspace) = 0;

  // This rank's routed-expert slot buffers of each MoE layer, in MoE layer order. Expert load
  // balancing copies weights into these slots in place: the buffers never move, so their
  // addresses (which captured graphs read) stay valid. Shared experts are not among them: they
  // are replicated on every rank like attention.
  virtual std::vector<ExpertSlots> moe_expert_slots() const = 0;
  // Reads logical expert `expert` of MoE layer `moe_layer` from the checkpoint (memory-mapped, or
  // the dummy weights' generator) into local slot `slot`, in place. Returns the bytes written.
  virtual size_t load_expert(size_t moe_layer, int64_t slot, int32_t expert) = 0;
};

}  // namespace tidal
