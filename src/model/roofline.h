// What a forward step of a MoE model must at least move and compute: the floors the benchmark
// compares measured times with (bytes over memory bandwidth, FLOPs over the matmul rate).
#pragma once

#include <cstdint>
#include <span>

#include "model/model_config.h"

namespace tidal {

// Bytes a decode step must read from device memory at least: every weight it uses once, and the
// KV cache of every sequence once. Activations are left out (they are small and may stay in
// cache).
struct StepBytes {
  double dense_weights = 0;   // embeddings rows, norms, attention, routers, dense MLPs, lm_head
  double expert_weights = 0;  // the experts the step's tokens were routed to, each once
  double kv_cache = 0;        // keys and values of every sequence's context, every layer
  double total() const { return dense_weights + expert_weights + kv_cache; }
};

// One decode step of `num_seqs` sequences whose context (this step's token included) is
// `context_len`. touched_experts[i] is how many distinct experts the tokens reached in the i-th
// MoE layer (the benchmark counts them); weights and KV cache are of `weight_bytes` and
// `kv_bytes` per element.
StepBytes decode_step_bytes(const ModelConfig& config, int64_t num_seqs, int64_t context_len,
                            std::span<const int64_t> touched_experts, double weight_bytes,
                            double kv_bytes);

// Bytes the KV cache keeps per token over every layer, for `kv_bytes` per element, and what
// multi-head attention with the same query heads would keep (keys of head_dim, or MLA's
// qk_nope + qk_rope, and values of head_dim, or MLA's v_head_dim, for every head): MLA's point.
double kv_cache_bytes_per_token(const ModelConfig& config, double kv_bytes);
double multi_head_kv_cache_bytes_per_token(const ModelConfig& config, double kv_bytes);

// The multiply-add work (2 FLOPs each) of a prefill of one sequence of `tokens` tokens from an
// empty cache: projections, router, the k routed experts per token, causal attention
// (QK^T and PV over the tokens before each), and lm_head for the last token only.
struct PrefillFlops {
  double matmul = 0;     // weight GEMMs
  double attention = 0;  // QK^T and PV
  double total() const { return matmul + attention; }
};
PrefillFlops prefill_flops(const ModelConfig& config, int64_t tokens);

}  // namespace tidal
