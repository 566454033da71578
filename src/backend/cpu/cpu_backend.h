// The CPU backend: f32 activations, weights read in place in their checkpoint dtype. It is the
// reference every other backend is checked against.
#pragma once

#include <mutex>
#include <unordered_map>

#include "backend/backend.h"

namespace tidal {

struct CpuBackendOptions {
  // 0: memory_info() reports the host's memory. Otherwise the backend acts as a device of this
  // many bytes: free is the limit less what it has allocated, so sizing from device memory (and
  // its order: weights, worst-case step, then the KV cache) runs, exactly, on a CPU.
  size_t memory_limit_bytes = 0;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(CpuBackendOptions options = {}) : options_(options) {}

  DeviceKind device() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }
  bool shares_host_memory() const override { return true; }
  bool draws_adjusted() const override { return true; }
  bool runs_fp8_weights() const override { return true; }
  MemoryInfo memory_info() const override;

  void copy_from_host(void* device_dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void fill_zero(const Tensor& tensor) override;
  void fill_random(const Tensor& tensor, const RandomFill& fill) override;
  void synchronize() override {}

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
  void store_kv(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                const KvCacheLayer& cache) override;
  void qk_norm_rope_store(const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& q_norm_weight, const Tensor& k_norm_weight, float eps,
                          const Tensor& positions, double theta, const Tensor& slot_mapping,
                          const KvCacheLayer& cache) override;
  void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionInputs& inputs,
                       float scale, const Tensor& out) override;
  void silu_and_mul(const Tensor& gate_up, const Tensor& out) override;
  void router_topk(const Tensor& logits, const RouterSpec& spec, const Tensor& topk_weights,
                   const Tensor& topk_ids) override;
  void rope_pairs(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                  float factor) override;
  void latent_attention(const Tensor& q_latent, const Tensor& q_rope, const KvCacheLayer& cache,
                        const AttentionInputs& inputs, float scale, const Tensor& out) override;
  void head_linear(const Tensor& x, const Tensor& weight, bool weight_k_major,
                   const Tensor& out) override;
  void moe_experts(const Tensor& x, const Tensor& topk_slots, const Tensor& topk_weights,
                   const ExpertSlots& experts, const Tensor& out) override;
  void moe_combine(const Tensor& expert_out, const Tensor& topk_weights,
                   const Tensor& out) override;
  void gather_rows(const Tensor& x, const Tensor& row_ids, const Tensor& out) override;
  void route_experts(const Tensor& topk_ids, const ExpertRoute& route, const Tensor& send_tokens,
                     const Tensor& send_slots, const Tensor& positions) override;
  void sample(const Tensor& logits, const Tensor& rows, const Tensor& banned,
              const Tensor& out) override;

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* data) noexcept override;

 private:
  CpuBackendOptions options_;
  // Live allocations, kept only under a memory limit.
  mutable std::mutex mutex_;
  std::unordered_map<void*, size_t> allocations_;
  size_t allocated_bytes_ = 0;
};

}  // namespace tidal
