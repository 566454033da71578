// CpuBackend: shape and dtype checks, then the reference kernels of kernels/cpu.
#include "backend/cpu/cpu_backend.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "backend/expert_route_check.h"
#include "backend/qk_norm_rope_check.h"
#include "backend/sampling_check.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/element.h"
#include "kernels/cpu/expert_route.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/random_fill.h"
#include "kernels/cpu/sampling.h"

namespace tidal {
namespace {

constexpr size_t kAlignment = 64;

void expect_f32(const Tensor& tensor, const char* what) {
  TIDAL_CHECK(tensor.dtype == DType::kF32, what, " must be F32 on the CPU backend, got ",
              dtype_name(tensor.dtype));
}
void expect_i32(const Tensor& tensor, const char* what) {
  TIDAL_CHECK(tensor.dtype == DType::kI32, what, " must be I32, got ", dtype_name(tensor.dtype));
}
int64_t last_dim(const Tensor& tensor) {
  return tensor.shape.back();
}
int64_t leading_rows(const Tensor& tensor) {
  return tensor.num_elements() / last_dim(tensor);
}
// The first matrix [rows, cols] of `weight` as the kernels read it.
cpu::WeightMatrix weight_matrix(const Tensor& weight, int64_t rows, int64_t cols) {
  TIDAL_CHECK((weight.dtype == DType::kF8E4M3) == (weight.scales.data != nullptr),
              "weights of dtype ", dtype_name(weight.dtype),
              weight.scales.data != nullptr ? " with" : " without", " block scales");
  return {.data = weight.data,
          .dtype = weight.dtype,
          .rows = rows,
          .cols = cols,
          .scales = weight.scales};
}

// MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim, which
// _SC_AVPHYS_PAGES leaves out); 0 where there is no such file.
size_t available_host_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib << 10;
  }
  return 0;
}

}  // namespace

MemoryInfo CpuBackend::memory_info() const {
  if (options_.memory_limit_bytes > 0) {
    std::lock_guard lock(mutex_);
    const size_t limit = options_.memory_limit_bytes;
    return {.total_bytes = limit,
            .free_bytes = limit > allocated_bytes_ ? limit - allocated_bytes_ : 0};
  }
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const auto total = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * page;
  size_t available = available_host_bytes();
  if (available == 0) available = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * page;
  return {.total_bytes = total, .free_bytes = available};
}

void* CpuBackend::raw_allocate(size_t bytes) {
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (options_.memory_limit_bytes > 0) {
    // Out of memory like a device: what the sizing must never cause.
    std::lock_guard lock(mutex_);
    TIDAL_CHECK(allocated_bytes_ + rounded <= options_.memory_limit_bytes,
                "cpu: out of memory: ", rounded, " bytes asked with ", allocated_bytes_, " of the ",
                options_.memory_limit_bytes, "-byte limit allocated");
  }
  void* data = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  if (data == nullptr) throw std::bad_alloc();
  if (options_.memory_limit_bytes > 0) {
    std::lock_guard lock(mutex_);
    allocations_[data] = rounded;
    allocated_bytes_ += rounded;
  }
  return data;
}

void CpuBackend::raw_free(void* data) noexcept {
  if (options_.memory_limit_bytes > 0) {
    std::lock_guard lock(mutex_);
    if (const auto found = allocations_.find(data); found != allocations_.end()) {
      allocated_bytes_ -= found->second;
      allocations_.erase(found);
    }
  }
  std::free(data);
}

void CpuBackend::copy_from_host(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(device_dst, host_src, bytes);
}
void CpuBackend::copy_to_host(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, device_src, bytes);
}
void CpuBackend::copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memmove(dst, src, bytes);
}
void CpuBackend::fill_zero(const Tensor& tensor) {
  std::memset(tensor.data, 0, tensor.num_bytes());
}
void CpuBackend::fill_random(const Tensor& tensor, const RandomFill& fill) {
  cpu::random_fill(tensor.data, tensor.dtype, tensor.num_elements(), fill.seed, fill.first_index,
                   fill.center, fill.step());
}

void CpuBackend::embedding(const Tensor& table, const Tensor& ids, const Tensor& out) {
  expect_i32(ids, "token ids");
  expect_f32(out, "embedding output");
  TIDAL_CHECK(out.dim(0) == ids.num_elements() && out.dim(1) == table.dim(1),
              "embedding output shape mismatch");
  cpu::embedding(table.data, table.dtype, table.dim(0), table.dim(1), ids.as<int32_t>(),
                 ids.num_elements(), out.as<float>());
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  expect_f32(x, "rms_norm input");
  expect_f32(out, "rms_norm output");
  TIDAL_CHECK(last_dim(x) == weight.num_elements(), "rms_norm width ", last_dim(x),
              " vs weight of ", weight.num_elements());
  cpu::rms_norm(x.as<float>(), leading_rows(x), last_dim(x), weight.data, weight.dtype, eps,
                out.as<float>());
}

void CpuBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
  TIDAL_CHECK(a.num_elements() == b.num_elements() && a.num_elements() == out.num_elements(),
              "add operands differ in size");
  cpu::add(a.as<float>(), b.as<float>(), a.num_elements(), out.as<float>());
}

void CpuBackend::add_sigmoid_gated(const Tensor& a, const Tensor& b, const Tensor& gate_logits,
                                   const Tensor& out) {
  expect_f32(gate_logits, "add_sigmoid_gated gate");
  TIDAL_CHECK(a.num_elements() == b.num_elements() && a.num_elements() == out.num_elements() &&
                  gate_logits.num_elements() == leading_rows(a),
              "add_sigmoid_gated: a, b and out [tokens, width] and one gate logit per token");
  cpu::add_sigmoid_gated(a.as<float>(), b.as<float>(), gate_logits.as<float>(), leading_rows(a),
                         last_dim(a), out.as<float>());
}

void CpuBackend::add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                              float eps, const Tensor& out) {
  expect_f32(residual, "add_rms_norm residual");
  expect_f32(x, "add_rms_norm input");
  expect_f32(out, "add_rms_norm output");
  TIDAL_CHECK(
      residual.num_elements() == x.num_elements() && residual.num_elements() == out.num_elements(),
      "add_rms_norm operands differ in size");
  TIDAL_CHECK(last_dim(residual) == weight.num_elements(), "add_rms_norm width ",
              last_dim(residual), " vs weight of ", weight.num_elements());
  TIDAL_CHECK(out.data != residual.data, "add_rms_norm: out must not alias the residual");
  cpu::add_rms_norm(residual.as<float>(), x.as<float>(), leading_rows(residual), last_dim(residual),
                    weight.data, weight.dtype, eps, out.as<float>());
}

void CpuBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
                        const Tensor& out) {
  expect_f32(x, "linear input");
  expect_f32(out, "linear output");
  TIDAL_CHECK(weight.shape.size() == 2 && last_dim(x) == weight.dim(1), "linear: input width ",
              last_dim(x), " does not match weight [", weight.dim(0), ", ", weight.dim(1), "]");
  TIDAL_CHECK(last_dim(out) == weight.dim(0) && leading_rows(out) == leading_rows(x),
              "linear output shape mismatch");
  cpu::linear(x.as<float>(), leading_rows(x), weight_matrix(weight, weight.dim(0), weight.dim(1)),
              bias ? bias->data : nullptr, bias ? bias->dtype : DType::kF32, out.as<float>());
}

void CpuBackend::rope(const Tensor& q, const Tensor& k, const Tensor& positions, double theta) {
  expect_i32(positions, "positions");
  const int64_t tokens = positions.num_elements();
  cpu::rope(q.as<float>(), tokens, q.dim(1), q.dim(2), positions.as<int32_t>(), theta);
  cpu::rope(k.as<float>(), tokens, k.dim(1), k.dim(2), positions.as<int32_t>(), theta);
}

namespace {
cpu::PagedKvLayout layout_of(const KvCacheLayer& cache) {
  return {.num_blocks = cache.key.dim(0),
          .block_size = cache.key.dim(1),
          .num_kv_heads = cache.key.dim(2),
          .head_dim = cache.key.dim(3)};
}
}  // namespace

void CpuBackend::store_kv(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          const KvCacheLayer& cache) {
  expect_f32(k, "store_kv keys");
  expect_f32(v, "store_kv values");
  expect_i32(slot_mapping, "slot mapping");
  const int64_t tokens = slot_mapping.num_elements();
  const int64_t key_width = cache.key.dim(2) * cache.key.dim(3);
  const int64_t value_width = cache.value.dim(2) * cache.value.dim(3);
  TIDAL_CHECK(k.num_elements() == tokens * key_width && v.num_elements() == tokens * value_width,
              "store_kv: keys/values of ", k.num_elements(), "/", v.num_elements(),
              " elements for ", tokens, " tokens of ", key_width, "/", value_width);
  cpu::store_kv(k.as<float>(), v.as<float>(), tokens, slot_mapping.as<int32_t>(),
                cache.key.dim(0) * cache.key.dim(1), key_width, value_width, cache.key.as<float>(),
                cache.value.as<float>());
}

void CpuBackend::rope_pairs(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                            float factor) {
  expect_f32(x, "rope_pairs input");
  expect_f32(inv_freq, "rope_pairs inv_freq");
  expect_i32(positions, "positions");
  TIDAL_CHECK(x.shape.size() == 3 && x.dim(2) % 2 == 0 && x.dim(0) == positions.num_elements() &&
                  inv_freq.num_elements() == x.dim(2) / 2,
              "rope_pairs: x [tokens, heads, even dim], a position per token, inv_freq [dim / 2]");
  cpu::rope_pairs(x.as<float>(), x.dim(0), x.dim(1), x.dim(2), positions.as<int32_t>(),
                  inv_freq.as<float>(), factor);
}

void CpuBackend::qk_norm_rope_store(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& q_norm_weight, const Tensor& k_norm_weight,
                                    float eps, const Tensor& positions, double theta,
                                    const Tensor& slot_mapping, const KvCacheLayer& cache) {
  expect_f32(q, "qk_norm_rope_store q");
  expect_f32(k, "qk_norm_rope_store k");
  expect_f32(v, "qk_norm_rope_store v");
  expect_i32(positions, "positions");
  expect_i32(slot_mapping, "slot mapping");
  const cpu::PagedKvLayout layout = layout_of(cache);
  const int64_t tokens =
      check_qk_norm_rope_store_shapes(q, k, v, q_norm_weight, k_norm_weight, positions,
                                      slot_mapping, layout.num_kv_heads, layout.head_dim);
  cpu::qk_norm_rope_store({.q = q.as<float>(),
                           .k = k.as<float>(),
                           .v = v.as<float>(),
                           .num_tokens = tokens,
                           .num_heads = q.dim(1),
                           .q_norm = q_norm_weight.data,
                           .q_norm_dtype = q_norm_weight.dtype,
                           .k_norm = k_norm_weight.data,
                           .k_norm_dtype = k_norm_weight.dtype,
                           .eps = eps,
                           .positions = positions.as<int32_t>(),
                           .theta = theta,
                           .slot_mapping = slot_mapping.as<int32_t>(),
                           .layout = layout,
                           .key_cache = cache.key.as<float>(),
                           .value_cache = cache.value.as<float>()});
}

void CpuBackend::paged_attention(const Tensor& q, const KvCacheLayer& cache,
                                 const AttentionInputs& inputs, float scale, const Tensor& out) {
  expect_f32(q, "attention query");
  cpu::paged_attention({.q = q.as<float>(),
                        .key_cache = cache.key.as<float>(),
                        .value_cache = cache.value.as<float>(),
                        .layout = layout_of(cache),
                        .num_heads = q.dim(1),
                        .query_start = inputs.query_start.as<int32_t>(),
                        .context_lens = inputs.context_lens.as<int32_t>(),
                        .block_tables = inputs.block_tables.as<int32_t>(),
                        .num_seqs = inputs.num_seqs,
                        .max_blocks_per_seq = inputs.block_tables.dim(1),
                        .scale = scale,
                        .out = out.as<float>()});
}

void CpuBackend::silu_and_mul(const Tensor& gate_up, const Tensor& out) {
  TIDAL_CHECK(last_dim(gate_up) == 2 * last_dim(out), "silu_and_mul widths mismatch");
  cpu::silu_and_mul(gate_up.as<float>(), leading_rows(gate_up), last_dim(out), out.as<float>());
}

void CpuBackend::router_topk(const Tensor& logits, const RouterSpec& spec,
                             const Tensor& topk_weights, const Tensor& topk_ids) {
  expect_f32(logits, "router logits");
  expect_f32(topk_weights, "top-k weights");
  expect_i32(topk_ids, "top-k ids");
  TIDAL_CHECK(logits.shape.size() == 2 && topk_ids.shape.size() == 2 &&
                  topk_weights.shape == topk_ids.shape && topk_ids.dim(0) == logits.dim(0),
              "router_topk: logits [tokens, experts], weights and ids [tokens, k]");
  if (spec.selection_bias != nullptr) {
    expect_f32(*spec.selection_bias, "router selection bias");
    TIDAL_CHECK(spec.selection_bias->num_elements() == logits.dim(1), "router selection bias of ",
                spec.selection_bias->num_elements(), " for ", logits.dim(1), " experts");
  }
  cpu::router_topk({.logits = logits.as<float>(),
                    .num_tokens = logits.dim(0),
                    .num_experts = logits.dim(1),
                    .k = topk_ids.dim(1),
                    .sigmoid = spec.sigmoid,
                    .selection_bias =
                        spec.selection_bias != nullptr ? spec.selection_bias->as<float>() : nullptr,
                    .num_groups = spec.num_groups,
                    .topk_groups = spec.topk_groups,
                    .group_score_top2_sum = spec.group_score_top2_sum,
                    .renormalize = spec.renormalize,
                    .scaling = spec.scaling,
                    .topk_weights = topk_weights.as<float>(),
                    .topk_ids = topk_ids.as<int32_t>()});
}

void CpuBackend::latent_attention(const Tensor& q_latent, const Tensor& q_rope,
                                  const KvCacheLayer& cache, const AttentionInputs& inputs,
                                  float scale, const Tensor& out) {
  expect_f32(q_latent, "latent attention query");
  expect_f32(q_rope, "latent attention rotary query");
  expect_f32(out, "latent attention output");
  TIDAL_CHECK(q_latent.shape.size() == 3 && q_rope.shape.size() == 3 &&
                  q_rope.dim(0) == q_latent.dim(0) && q_rope.dim(1) == q_latent.dim(1) &&
                  out.shape == q_latent.shape && cache.key.dim(2) == 1 && cache.value.dim(2) == 1 &&
                  cache.key.dim(3) == q_latent.dim(2) && cache.value.dim(3) == q_rope.dim(2),
              "latent_attention: q_latent and out [tokens, heads, L], q_rope [tokens, heads, R], "
              "cache pools [blocks, block_size, 1, L] and [.., 1, R]");
  // A row outside every sequence (padding) is not written by the kernel: zero it first.
  std::fill_n(out.as<float>(), out.num_elements(), 0.0f);
  if (inputs.num_seqs == 0) return;
  cpu::latent_attention({.q_latent = q_latent.as<float>(),
                         .q_rope = q_rope.as<float>(),
                         .latent_cache = cache.key.as<float>(),
                         .rope_cache = cache.value.as<float>(),
                         .num_heads = q_latent.dim(1),
                         .latent_dim = q_latent.dim(2),
                         .rope_dim = q_rope.dim(2),
                         .block_size = cache.key.dim(1),
                         .query_start = inputs.query_start.as<int32_t>(),
                         .context_lens = inputs.context_lens.as<int32_t>(),
                         .block_tables = inputs.block_tables.as<int32_t>(),
                         .num_seqs = inputs.num_seqs,
                         .max_blocks_per_seq = inputs.block_tables.dim(1),
                         .scale = scale,
                         .out = out.as<float>()});
}

void CpuBackend::head_linear(const Tensor& x, const Tensor& weight, bool weight_k_major,
                             const Tensor& out) {
  expect_f32(x, "head_linear input");
  expect_f32(out, "head_linear output");
  TIDAL_CHECK(x.shape.size() == 3 && out.shape.size() == 3 && weight.shape.size() == 3 &&
                  out.dim(0) == x.dim(0) && out.dim(1) == x.dim(1) && weight.dim(0) == x.dim(1),
              "head_linear: x [tokens, heads, k], weight [heads, ...], out [tokens, heads, n]");
  const int64_t k = x.dim(2);
  const int64_t n = out.dim(2);
  TIDAL_CHECK(weight_k_major ? (weight.dim(1) == k && weight.dim(2) == n)
                             : (weight.dim(1) == n && weight.dim(2) == k),
              "head_linear: weight [heads, ", weight_k_major ? "k, n" : "n, k", "] for k ", k,
              " and n ", n);
  TIDAL_CHECK(weight.dtype != DType::kF8E4M3, "head_linear: FP8 weights (dequantized at load)");
  cpu::head_linear(x.as<float>(), x.dim(0), x.dim(1), k, weight.data, weight.dtype, n,
                   weight_k_major, out.as<float>());
}

void CpuBackend::moe_experts(const Tensor& x, const Tensor& topk_slots, const Tensor& topk_weights,
                             const ExpertSlots& experts, const Tensor& out) {
  expect_f32(x, "MoE input");
  expect_i32(topk_slots, "top-k slots");
  TIDAL_CHECK(experts.gate_up.dtype == experts.down.dtype, "expert weights of mixed dtypes");
  cpu::moe_experts(
      {.x = x.as<float>(),
       .num_tokens = x.dim(0),
       .hidden = x.dim(1),
       .intermediate = experts.down.dim(2),
       .k = topk_slots.dim(1),
       .topk_slots = topk_slots.as<int32_t>(),
       .topk_weights = topk_weights.as<float>(),
       .gate_up = weight_matrix(experts.gate_up, experts.gate_up.dim(1), experts.gate_up.dim(2)),
       .down = weight_matrix(experts.down, experts.down.dim(1), experts.down.dim(2)),
       .num_slots = experts.gate_up.dim(0),
       .out = out.as<float>()});
}

void CpuBackend::moe_combine(const Tensor& expert_out, const Tensor& topk_weights,
                             const Tensor& out) {
  expect_f32(expert_out, "expert outputs");
  TIDAL_CHECK(expert_out.dim(0) == topk_weights.num_elements(), "moe_combine: ", expert_out.dim(0),
              " expert rows for ", topk_weights.num_elements(), " weights");
  cpu::moe_combine(expert_out.as<float>(), topk_weights.as<float>(), out.dim(0),
                   topk_weights.dim(1), out.dim(1), out.as<float>());
}

void CpuBackend::gather_rows(const Tensor& x, const Tensor& row_ids, const Tensor& out) {
  expect_i32(row_ids, "row ids");
  cpu::gather_rows(x.as<float>(), last_dim(x), x.shape.empty() ? 0 : x.dim(0),
                   row_ids.as<int32_t>(), row_ids.num_elements(), out.as<float>());
}

void CpuBackend::route_experts(const Tensor& topk_ids, const ExpertRoute& route,
                               const Tensor& send_tokens, const Tensor& send_slots,
                               const Tensor& positions) {
  check_route_experts_args(topk_ids, route, send_tokens, send_slots, positions);
  const bool has_token_ids = route.token_ids.data != nullptr;
  const bool has_load_counts = route.load_counts.data != nullptr;
  cpu::route_experts({.topk_ids = topk_ids.as<int32_t>(),
                      .num_tokens = topk_ids.dim(0),
                      .k = topk_ids.dim(1),
                      .replica_count = route.replica_count.as<int32_t>(),
                      .replica_slots = route.replica_slots.as<int32_t>(),
                      .num_experts = route.replica_count.num_elements(),
                      .replica_width = route.replica_slots.dim(1),
                      .slots_per_rank = route.slots_per_rank,
                      .num_ranks = route.num_ranks,
                      .capacity = route.capacity,
                      .send_tokens = send_tokens.as<int32_t>(),
                      .send_slots = send_slots.as<int32_t>(),
                      .positions = positions.as<int32_t>(),
                      .token_ids = has_token_ids ? route.token_ids.as<int32_t>() : nullptr,
                      .load_counts = has_load_counts ? route.load_counts.as<int32_t>() : nullptr});
}

void CpuBackend::sample(const Tensor& logits, const Tensor& rows, const Tensor& banned,
                        const Tensor& out) {
  check_sample_args(logits, rows, banned, out);
  cpu::sample({.logits = logits.as<float>(),
               .num_rows = logits.dim(0),
               .vocab = logits.dim(1),
               .rows = static_cast<const SamplingRow*>(rows.data),
               .banned = banned.as<int32_t>(),
               .num_banned = num_banned_ids(banned),
               .out = static_cast<SampledToken*>(out.data)});
}

}  // namespace tidal
