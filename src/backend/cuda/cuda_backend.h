// The CUDA backend on one GPU: bf16 activations and KV cache, f32 accumulation, weights read in
// their checkpoint dtype; every op is enqueued on one stream the backend owns.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "backend/backend.h"

// The CUDA handle types, declared here so this header needs no CUDA include.
struct CUstream_st;
struct cublasContext;
struct CUgraphExec_st;

namespace tidal {

class CudaBackend final : public Backend {
 public:
  // Throws tidal::Error naming the device when it is missing or cannot be set up.
  explicit CudaBackend(int device_index);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  DeviceKind device() const override { return DeviceKind::kCuda; }
  std::string name() const override;
  DType activation_dtype() const override { return DType::kBF16; }
  MemoryInfo memory_info() const override;
  int device_index() const { return device_index_; }
  CUstream_st* stream() const { return stream_; }

  void copy_from_host(void* device_dst, const void* host_src, size_t bytes) override;
  // Waits for the stream: the host may read host_dst as soon as this returns.
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void fill_zero(const Tensor& tensor) override;
  void fill_random(const Tensor& tensor, const RandomFill& fill) override;
  void synchronize() override;

  void embedding(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
  void add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void add_sigmoid_gated(const Tensor& a, const Tensor& b, const Tensor& gate_logits,
                         const Tensor& out) override;
  void add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                    const Tensor& out) override;
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
              const Tensor& out) override;
  void rope(const Tensor& q, const Tensor& k, const Tensor& positions, double theta) override;
  void rope_pairs(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float factor) override;
  void store_kv(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                const KvCacheLayer& cache) override;
  void qk_norm_rope_store(const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& q_norm_weight, const Tensor& k_norm_weight, float eps,
                          const Tensor& positions, double theta, const Tensor& slot_mapping,
                          const KvCacheLayer& cache) override;
  void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionInputs& inputs,
                       float scale, const Tensor& out) override;
  void latent_attention(const Tensor& q_latent, const Tensor& q_rope, const KvCacheLayer& cache,
                        const AttentionInputs& inputs, float scale, const Tensor& out) override;
  void head_linear(const Tensor& x, const Tensor& weight, bool weight_k_major,
                   const Tensor& out) override;
  void silu_and_mul(const Tensor& gate_up, const Tensor& out) override;
  void router_topk(const Tensor& logits, const RouterSpec& spec, const Tensor& topk_weights,
                   const Tensor& topk_ids) override;
  void moe_experts(const Tensor& x, const Tensor& topk_slots, const Tensor& topk_weights,
                   const ExpertSlots& experts, const Tensor& out) override;
  void moe_combine(const Tensor& expert_out, const Tensor& topk_weights,
                   const Tensor& out) override;
  void gather_rows(const Tensor& x, const Tensor& row_ids, const Tensor& out) override;
  bool pin_host(void* data, size_t bytes) override;
  void unpin_host(void* data) noexcept override;
  void route_experts(const Tensor& topk_ids, const ExpertRoute& route, const Tensor& send_tokens,
                     const Tensor& send_slots, const Tensor& positions) override;
  void sample(const Tensor& logits, const Tensor& rows, const Tensor& banned,
              const Tensor& out) override;

  bool supports_graphs() const override { return true; }
  void begin_capture() override;
  int64_t end_capture() override;
  void replay(int64_t graph) override;
  void release_graph(int64_t graph) override;
  int64_t num_captures() const override { return num_captures_; }

  // Bytes of the backend's own scratch (MoE permutation and intermediates) so far.
  size_t scratch_bytes() const { return scratch_bytes_; }

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* data) noexcept override;

 private:
  // Makes this backend's device current on the calling thread (the engine may run on another
  // thread than the one that built the backend).
  void activate() const;
  void release() noexcept;
  // Waits until the stream has drained, polling, for at most kDeviceWaitTimeout; throws
  // tidal::Error naming `what` past it.
  void wait_for_stream(const char* what) const;
  // Longer than any step or weight move takes; a wait past it is a hung device.
  static constexpr std::chrono::seconds kDeviceWaitTimeout{60};
  // Scratch of at least `bytes`, grown (after the stream drains) when a bigger batch arrives.
  void* scratch(size_t bytes);

  int device_index_ = 0;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  bool capturing_ = false;
  std::vector<CUgraphExec_st*> graphs_;  // instantiated, in capture order; null once released
  int64_t num_captures_ = 0;
  int64_t num_live_graphs_ = 0;
};

}  // namespace tidal
