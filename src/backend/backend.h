// The Backend interface: memory and every op of the forward pass. CPU and CUDA implement it;
// the model and the engine talk only to this.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "common/tensor.h"

namespace tidal {

class Backend;

// Owning device allocation; freed through the backend that made it. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* owner, void* data, size_t bytes)
      : owner_(owner), data_(data), bytes_(bytes) {}
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend* owner_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// One layer of the paged KV cache: two pools of [num_blocks, block_size, heads, dim]. Grouped-query
// attention keeps keys and values, [.., kv_heads, head_dim] each; multi-head latent attention
// (DeepSeek) keeps each token's compressed latent in `key` [.., 1, kv_lora_rank] and its rotary
// key in `value` [.., 1, qk_rope_head_dim] (model/model_config.h KvCacheLayout).
struct KvCacheLayer {
  Tensor key;
  Tensor value;
};

// Per-step sequence layout for attention, as device tensors (int32), plus host-side maxima so
// kernels can be launched without reading device memory.
struct AttentionInputs {
  Tensor query_start;   // [num_seqs + 1] row offsets of each sequence's new tokens
  Tensor context_lens;  // [num_seqs] tokens in the cache after this step's tokens are stored
  Tensor block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs = 0;
  int64_t max_query_len = 0;
  int64_t max_context_len = 0;
};

// Where expert parallelism sends a step's routed choices: one layer's replica tables (device
// copies of eplb::PlacementTables) and the fixed blocks of the dispatch buffers.
struct ExpertRoute {
  Tensor replica_count;  // [E] I32: replicas of each logical expert, >= 1
  Tensor replica_slots;  // [E, replica_width] I32: their physical slots
  int64_t slots_per_rank = 0;
  int64_t num_ranks = 0;
  int64_t capacity = 0;     // rows of each rank's block
  Tensor token_ids = {};    // [T] I32 or empty: the step's tokens; id -1 (padding) is not routed
  Tensor load_counts = {};  // [E] I32 or empty: every routed choice adds one to its expert's count
};

// How a router scores experts and picks a token's top k (model/model_config.h RouterConfig).
// Scores are softmax(logits) over the experts, or sigmoid(logits) each. The choice ranks the
// scores plus `selection_bias` (DeepSeek-V3's e_score_correction_bias; never in the weights),
// among the experts of the topk_groups best of num_groups equal groups (a group's score is its
// best, or the sum of its two best, biased scores). The weights are the chosen experts' scores,
// renormalised to sum to one when asked, times `scaling`. Ties go to the lower index.
struct RouterSpec {
  bool sigmoid = false;
  const Tensor* selection_bias = nullptr;  // [num_experts] F32, or nullptr
  int64_t num_groups = 1;
  int64_t topk_groups = 1;
  bool group_score_top2_sum = false;  // false: a group's score is its best expert's
  bool renormalize = false;
  float scaling = 1.0f;
};

// A layer's experts in slot order: gate and up stacked on the output dimension.
struct ExpertSlots {
  Tensor gate_up;  // [num_slots, 2 * intermediate, hidden]
  Tensor down;     // [num_slots, hidden, intermediate]

  // One buffer of the layer's slots, slot s at base + s * slot_bytes.
  struct Region {
    std::byte* base = nullptr;
    size_t slot_bytes = 0;
  };
  // Everything a slot's expert is: the weights and, for FP8 weights, their block scales; what
  // moving an expert to another slot or rank copies.
  std::vector<Region> regions() const {
    const auto slots = static_cast<size_t>(gate_up.dim(0));
    std::vector<Region> all;
    for (const Tensor* weight : {&gate_up, &down}) {
      all.push_back({static_cast<std::byte*>(weight->data), weight->num_bytes() / slots});
      if (weight->scales.data != nullptr) {
        const int64_t rows = weight->dim(1);
        const int64_t cols = weight->dim(2);
        all.push_back({reinterpret_cast<std::byte*>(weight->scales.data),
                       static_cast<size_t>(weight->scales.per_matrix(rows, cols)) * 4});
      }
    }
    return all;
  }
  size_t slot_bytes() const {
    size_t bytes = 0;
    for (const Region& region : regions()) bytes += region.slot_bytes;
    return bytes;
  }
};

// A reproducible uniform fill (dummy weights, benchmark inputs): element i of a tensor gets
// center + t * half_width / 2^23 with t = counter_random::ticks(seed, first_index + i) in
// [-2^23, 2^23), so values lie in [center - half_width, center + half_width). Element i depends
// only on (seed, first_index + i): a slice filled with its first_index gets the same values as
// the whole. half_width must be a power of two (then every backend rounds the same way).
struct RandomFill {
  uint64_t seed = 0;
  int64_t first_index = 0;
  float center = 0.0f;
  float half_width = 1.0f;

  // The value of one tick, half_width / 2^23; throws tidal::Error unless half_width is a
  // positive power of two.
  float step() const {
    int exponent = 0;
    TIDAL_CHECK(half_width > 0.0f && std::frexp(half_width, &exponent) == 0.5f,
                "random fill half width ", half_width, " is not a positive power of two");
    return std::ldexp(half_width, -23);
  }
};

// The device's memory as the KV cache sizing sees it (engine/kv_cache_plan.h).
struct MemoryInfo {
  size_t total_bytes = 0;
  size_t free_bytes = 0;  // what an allocation could still get now
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  virtual std::string name() const = 0;
  // The dtype of activations, KV cache and workspace tensors on this backend.
  virtual DType activation_dtype() const = 0;
  // True when device tensors may point straight into host memory (the CPU backend reads
  // memory-mapped checkpoint weights in place instead of copying them).
  virtual bool shares_host_memory() const { return false; }
  // The device's memory now: a GPU's (cudaMemGetInfo), the host's for the CPU (physical and
  // available memory). Allocations made through this backend are already out of free_bytes.
  virtual MemoryInfo memory_info() const = 0;

  // Memory.
  DeviceBuffer allocate(size_t bytes) { return DeviceBuffer(this, raw_allocate(bytes), bytes); }
  virtual void copy_from_host(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* device_src, size_t bytes) = 0;
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) = 0;
  // Page-locks host memory so copies to and from the device run at full speed; false where it
  // cannot (or need not: the device shares host memory), and the memory stays usable either way.
  // unpin_host before the memory is freed.
  virtual bool pin_host(void* /*data*/, size_t /*bytes*/) { return false; }
  virtual void unpin_host(void* /*data*/) noexcept {}
  virtual void fill_zero(const Tensor& tensor) = 0;
  // F32, F16 or BF16 tensors; values rounded to nearest even in the tensor's dtype.
  virtual void fill_random(const Tensor& tensor, const RandomFill& fill) = 0;
  virtual void synchronize() = 0;

  // Ops. Activations are [tokens, features] in activation_dtype(); weights are [out, in] in
  // F32/F16/BF16; integer inputs are I32 device tensors. Outputs are fully written.
  // Token id -1 (padding) gives a zero row.
  virtual void embedding(const Tensor& table, const Tensor& ids, const Tensor& out) = 0;
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  virtual void add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out[t, :] = a[t, :] + sigmoid(gate_logits[t]) * b[t, :] for a, b and out [tokens, width] and
  // gate_logits [tokens, 1] F32 (Qwen2-MoE's gated shared expert). out may alias a.
  virtual void add_sigmoid_gated(const Tensor& a, const Tensor& b, const Tensor& gate_logits,
                                 const Tensor& out) = 0;
  // residual = residual + x, then out = rms_norm(residual, weight): bit for bit add() then
  // rms_norm() (the norm reads the rounded sum), in one pass. out must not alias residual.
  virtual void add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                            float eps, const Tensor& out) = 0;
  // out = x * weight^T (+ bias).
  virtual void linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
                      const Tensor& out) = 0;
  // Rotary embedding in place on q [tokens, heads, head_dim] and k [tokens, kv_heads, head_dim],
  // rotate-half ("neox") layout as Hugging Face Llama/Qwen.
  virtual void rope(const Tensor& q, const Tensor& k, const Tensor& positions, double theta) = 0;
  // Interleaved-pair rotary embedding in place on x [tokens, heads, dim] (DeepSeek's MLA): dims
  // (2i, 2i + 1) rotate together by the angle positions[t] * inv_freq[i] (inv_freq [dim / 2] F32,
  // YaRN's or plain), and the rotated pair is scaled by `factor` (YaRN's attention factor).
  virtual void rope_pairs(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                          float factor) = 0;
  // Writes k [tokens, key_heads, key_dim] and v [tokens, value_heads, value_dim] into the slots
  // of the cache's pools (each the shape of its pool's last two dims); a slot < 0 is skipped.
  virtual void store_kv(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                        const KvCacheLayer& cache) = 0;
  // Qwen3's attention input chain in one op, bit for bit rms_norm(q, q_norm_weight) and
  // rms_norm(k, k_norm_weight) per head (in place), rope(q, k, positions, theta), then
  // store_kv(k, v, slot_mapping, cache). q [tokens, heads, head_dim], k and v [tokens, kv_heads,
  // head_dim]; the weights [head_dim].
  virtual void qk_norm_rope_store(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& q_norm_weight, const Tensor& k_norm_weight,
                                  float eps, const Tensor& positions, double theta,
                                  const Tensor& slot_mapping, const KvCacheLayer& cache) = 0;
  // Causal attention of q [tokens, heads, head_dim] over each sequence's cached keys/values.
  virtual void paged_attention(const Tensor& q, const KvCacheLayer& cache,
                               const AttentionInputs& inputs, float scale, const Tensor& out) = 0;
  // Multi-head latent attention over the latent cache (cache.key [blocks, block_size, 1, L]
  // latents, cache.value [blocks, block_size, 1, R] rotary keys), with the key and value
  // up-projections absorbed into the query and output sides: query token t of head h scores
  // cached token j as (q_latent[t, h] . latent[j] + q_rope[t, h] . rope_key[j]) * scale and
  // out[t, h] = sum_j softmax_j * latent[j]. q_latent and out [tokens, heads, L], q_rope [tokens,
  // heads, R]; causal as paged_attention.
  virtual void latent_attention(const Tensor& q_latent, const Tensor& q_rope,
                                const KvCacheLayer& cache, const AttentionInputs& inputs,
                                float scale, const Tensor& out) = 0;
  // A linear map per head: out[t, h, :] = x[t, h, :] . weight[h]^T for weight [heads, n, k]
  // (as linear()), or x[t, h, :] . weight[h] for weight [heads, k, n] when `weight_k_major`.
  // x [tokens, heads, k], out [tokens, heads, n]; f32 accumulation.
  virtual void head_linear(const Tensor& x, const Tensor& weight, bool weight_k_major,
                           const Tensor& out) = 0;
  // out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i].
  virtual void silu_and_mul(const Tensor& gate_up, const Tensor& out) = 0;
  // Per row of logits [tokens, num_experts] F32: the top-k experts as `spec` picks them, in
  // descending order of their selection score, and their weights (both [tokens, k]).
  virtual void router_topk(const Tensor& logits, const RouterSpec& spec, const Tensor& topk_weights,
                           const Tensor& topk_ids) = 0;
  // out[t] = sum_j topk_weights[t, j] * expert(topk_slots[t, j])(x[t]); a slot < 0 contributes 0.
  virtual void moe_experts(const Tensor& x, const Tensor& topk_slots, const Tensor& topk_weights,
                           const ExpertSlots& experts, const Tensor& out) = 0;
  // out[t] = sum_j topk_weights[t, j] * expert_out[t * k + j], in j order (the same arithmetic
  // as moe_experts, so expert parallelism never changes a result).
  virtual void moe_combine(const Tensor& expert_out, const Tensor& topk_weights,
                           const Tensor& out) = 0;
  // out[i] = x[row_ids[i]]; an id outside x's rows (-1, say) gives a zero row.
  virtual void gather_rows(const Tensor& x, const Tensor& row_ids, const Tensor& out) = 0;
  // Expert parallelism's dispatch plan, made where the ids are (no trip to the host). Choice
  // a = t * k + j of topk_ids [T, k] takes replica eplb::replica_hash(t, e) % replica_count[e] of
  // its expert e, physical slot s, and becomes a row of rank b = s / slots_per_rank's block:
  // send_tokens[b * capacity + i] = t, send_slots[b * capacity + i] = s % slots_per_rank and
  // positions[a] = b * capacity + i. Unused rows hold -1 in both; an id < 0, or a token whose
  // route.token_ids entry is -1 (padding), is not routed (position -1) and not counted. send_tokens
  // and send_slots are [num_ranks * capacity] I32, positions [T * k]. Within a block the CPU keeps
  // choice order; the GPU's order is unspecified (each row is computed on its own, so no result
  // depends on it). A full block is an error on the CPU and drops the choice (position -1) on the
  // GPU; capacity T * k never fills.
  virtual void route_experts(const Tensor& topk_ids, const ExpertRoute& route,
                             const Tensor& send_tokens, const Tensor& send_slots,
                             const Tensor& positions) = 0;
  // One token per row of logits [rows, vocab] F32, drawn as each SamplingRow says (kernels/
  // sampling_layout.h). rows: [rows, kSamplingRowWords] I32 holding SamplingRow; banned: I32 ids
  // (may be empty: data null); out: [rows, kSampledTokenWords] I32 holding SampledToken. Neither
  // allocates nor synchronises (a CUDA graph may record it).
  virtual void sample(const Tensor& logits, const Tensor& rows, const Tensor& banned,
                      const Tensor& out) = 0;

  // Graphs (CUDA). Between begin_capture() and end_capture() the backend records its work
  // instead of running it; replay(graph) runs the recording again on the same addresses, so a
  // caller rewrites the recorded inputs in place between replays. Nothing recorded may allocate
  // or synchronise (the backend throws if it would). Backends without graphs throw.
  virtual bool supports_graphs() const { return false; }
  // Whether sample() honours SamplingRow's adjusted-draw fields (allowed ids, logit adjustments,
  // min_p); the others must not be given rows that use them.
  virtual bool draws_adjusted() const { return false; }
  // Whether linear and moe_experts take FP8 (F8_E4M3, block-scaled) weights.
  virtual bool runs_fp8_weights() const { return false; }
  virtual void begin_capture() { TIDAL_FAIL(name(), ": this backend has no graphs"); }
  // Returns the graph's id for replay().
  virtual int64_t end_capture() { TIDAL_FAIL(name(), ": this backend has no graphs"); }
  virtual void replay(int64_t /*graph*/) { TIDAL_FAIL(name(), ": this backend has no graphs"); }
  // Destroys one graph (a warm-up replaces its set: addresses may have moved). Ids are never
  // reused.
  virtual void release_graph(int64_t /*graph*/) {}
  // Graphs captured since the backend was made, released ones included.
  virtual int64_t num_captures() const { return 0; }

 protected:
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(void* data) noexcept = 0;
  friend class DeviceBuffer;
};

inline DeviceBuffer::~DeviceBuffer() {
  if (owner_ != nullptr && data_ != nullptr) owner_->raw_free(data_);
}

inline DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr && data_ != nullptr) owner_->raw_free(data_);
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

// The backend for `device` ("cpu" or "cuda:N"); throws tidal::Error naming what is unavailable.
std::unique_ptr<Backend> make_backend(const std::string& device);

// Whether `device` names a GPU ("cuda" or "cuda:N"), without making a backend.
bool is_cuda_device(const std::string& device);

}  // namespace tidal
