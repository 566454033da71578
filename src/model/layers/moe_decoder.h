// The decoder stack of the MoE families (Qwen3-MoE, Qwen2-MoE, Mixtral, DeepSeek-V2/V3): its
// weights and one forward step, following Hugging Face's modeling of each. What differs between
// them is in the config (grouped-query or latent attention, q/k norms, biases, shared experts,
// the router's scoring and groups) and in the weight names.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/workspace.h"
#include "model/causal_lm.h"
#include "model/forward_batch.h"
#include "model/layers/attention.h"
#include "model/layers/expert_executor.h"
#include "model/layers/feed_forward.h"
#include "model/layers/latent_attention.h"
#include "model/loader/safetensors.h"
#include "model/weight_store.h"

namespace tidal {

// Where a family keeps a decoder layer's weights, under "model.layers.N.".
struct MoeDecoderNames {
  std::string moe_block = "mlp.";  // Mixtral: "block_sparse_moe."
  MoeWeightNames moe;
};

class MoeDecoder final : public CausalLm {
 public:
  // Loads every weight from `checkpoint` onto `backend`; throws tidal::Error naming the tensor
  // and file on any missing or mis-shaped weight.
  MoeDecoder(Backend& backend, ModelConfig config, Checkpoint checkpoint, ModelShard shard,
             MoeDecoderNames names);

  // Every tensor the constructor loads for `config`, routed experts in the fused layout, for
  // dummy weights.
  static std::vector<SyntheticTensor> checkpoint_tensors(const ModelConfig& config,
                                                         const MoeDecoderNames& names);

  const ModelConfig& config() const override { return config_; }
  bool capturable() const override { return executor_->capturable(); }
  Tensor forward(const ForwardBatch& batch, std::span<const KvCacheLayer> kv_cache,
                 Workspace& workspace) override;
  std::vector<ExpertSlots> moe_expert_slots() const override;
  size_t load_expert(size_t moe_layer, int64_t slot, int32_t expert) override;

 private:
  struct Layer {
    Tensor input_norm;
    Tensor post_attention_norm;
    AttentionWeights attention;                              // grouped-query attention ...
    std::optional<LatentAttentionWeights> latent_attention;  // ... or latent (config.mla)
    bool is_moe = false;
    MoeWeights moe;
    DenseMlpWeights mlp;
  };

  Backend* backend_;
  ModelConfig config_;
  MoeDecoderNames names_;
  LocalExpertExecutor local_executor_;
  ExpertExecutor* executor_;
  WeightStore store_;
  Tensor embed_tokens_;
  std::vector<Layer> layers_;
  Tensor final_norm_;
  Tensor lm_head_;
};

}  // namespace tidal
