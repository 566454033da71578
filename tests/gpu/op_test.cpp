// Every Backend op on the CUDA backend against the CPU reference: fresh random inputs (rounded to
// bf16, so both backends see the same values) at the Qwen3-30B-A3B shapes and at odd sizes,
// outputs poisoned with NaN first (an unwritten element fails), and a normalised error per op:
// max |cuda - cpu| / max |cpu| over the output, at most the case's bound.
//
// Bounds, from what the CUDA side rounds that the f32 CPU reference does not:
//   0      exact copies (embedding of a bf16 table, gather_rows, store_kv, router ids) and
//          fill_random (the same counter-based bits on both backends);
//   4e-3   one bf16 rounding of the output (2^-9 relative, plus f32 order noise): add, rms_norm,
//          moe_combine, linear with bf16 output, embedding of an f32/f16 table;
//   2e-4   linear with f32 output (only the f32 summation order differs);
//   1e-5   router weights (f32 softmax; only exp and summation order differ);
//   8e-3   silu_and_mul (fast exp), paged and latent attention (bf16 output of an f32 online
//          softmax);
//   1e-2   rope: an ulp of inv_freq moves an angle of ~3e4 rad by ~2e-3 rad, on either side;
//          rope_pairs (given inv_freq, so only sin/cos ulps and the output rounding) and
//          head_linear (cuBLAS, bf16 output) are within 4e-3;
//   2e-2   linear with F32/F16 weights (rounded to bf16 into the tensor cores) and moe_experts
//          (the SwiGLU output and each expert's output are rounded to bf16 between GEMMs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <numbers>
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "op_harness.h"
#include "test_rng.h"

namespace tidal {
namespace {

using testing_util::Rng;

using testing_util::cuda_backend;
using testing_util::decode;
using testing_util::encode;
using testing_util::Harness;
using testing_util::representable;

std::vector<float> random_values(Rng& rng, int64_t count, float scale, DType dtype = DType::kBF16,
                                 float offset = 0.0f) {
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = representable(offset + rng.uniform(-scale, scale), dtype);
  return values;
}

struct Dims {
  int64_t tokens = 0;
  int64_t hidden = 0;  // also: a linear's in_features, gather_rows' width
  int64_t inter = 0;   // also: a linear's out_features
  int64_t experts = 0;
  int64_t k = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  // embedding vocab, gather_rows source rows, store_kv blocks, latent_attention padding tokens
  int64_t rows = 0;
  int64_t block_size = 16;
  DType weight = DType::kBF16;
  bool out_f32 = false;
  bool bias = false;  // also: a router's selection bias
  bool in_place = false;
  // router: renormalise; moe_experts: some slots are remote (-1); head_linear: weight [h, k, n];
  // rope_pairs: YaRN inverse frequencies; latent_attention: max_context_len left 0 (unknown)
  bool flag = false;
  std::vector<int64_t> slot_rows = {};  // moe_experts: rows of each slot (k = 1), not random
  std::vector<std::pair<int64_t, int64_t>> seqs = {};  // attention: (new tokens, context length)
  int64_t table_blocks = 0;  // attention: block table width, at least the longest sequence's
  // router_topk: scoring, groups and scaling (renormalize and the bias come from flag and bias)
  RouterSpec router = {};
  // latent_attention: the rotary key width R (head_dim is the latent width L); store_kv: the
  // value pool's [1, rope_dim] rows instead of [kv_heads, head_dim] (MLA)
  int64_t rope_dim = 0;
  float factor = 1.0f;  // rope_pairs: the attention factor
};

struct OpCase {
  std::string op;
  std::string label;
  Dims dims;
  double bound = 0;
};

// Checks `got` (CUDA) against `want` (CPU): finite everywhere and within the normalised bound.
void expect_close(const OpCase& c, const std::string& what, const std::vector<float>& got,
                  const std::vector<float>& want, double bound) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_diff = 0;
  double max_ref = 0;
  int64_t nonfinite = 0;
  int64_t worst = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nonfinite++ == 0)
        ADD_FAILURE() << c.op << " " << c.label << " " << what << ": element " << i << " is "
                      << got[i] << " (unwritten or overflow)";
      continue;
    }
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (diff > max_diff) {
      max_diff = diff;
      worst = static_cast<int64_t>(i);
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  const double normalized = max_ref > 0 ? max_diff / max_ref : max_diff;
  std::printf("[op] %-16s %-44s %-8s error %.3g (bound %.3g, %zu values)\n", c.op.c_str(),
              c.label.c_str(), what.c_str(), normalized, bound, got.size());
  EXPECT_EQ(nonfinite, 0) << what;
  EXPECT_LE(normalized, bound) << c.op << " " << c.label << " " << what << ": worst element "
                               << worst << " cuda " << (worst >= 0 ? got[worst] : 0.0f) << " cpu "
                               << (worst >= 0 ? want[worst] : 0.0f);
}

void run_embedding(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<float> table = random_values(rng, d.rows * d.hidden, 1.0f, d.weight);
  std::vector<int32_t> ids(static_cast<size_t>(d.tokens));
  for (int32_t& id : ids) id = rng.below(d.rows);
  const Tensor cpu_out = h.host_poisoned({d.tokens, d.hidden});
  h.cpu().embedding(h.host(table, {d.rows, d.hidden}, d.weight), h.host_i32(ids, {d.tokens}),
                    cpu_out);
  const Tensor gpu_out = h.device_poisoned({d.tokens, d.hidden});
  h.gpu().embedding(h.device(table, {d.rows, d.hidden}, d.weight), h.device_i32(ids, {d.tokens}),
                    gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_rms_norm(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  // Per-head when heads are given: [tokens, heads, head_dim] rows of head_dim.
  const std::vector<int64_t> shape = d.heads > 0
                                         ? std::vector<int64_t>{d.tokens, d.heads, d.head_dim}
                                         : std::vector<int64_t>{d.tokens, d.hidden};
  const int64_t width = shape.back();
  const int64_t count = d.tokens * (d.heads > 0 ? d.heads * d.head_dim : d.hidden);
  const std::vector<float> x = random_values(rng, count, 2.0f);
  const std::vector<float> weight = random_values(rng, width, 0.5f, d.weight, 1.0f);
  const Tensor cpu_out = h.host_poisoned(shape);
  h.cpu().rms_norm(h.host(x, shape), h.host(weight, {width}, d.weight), 1e-6f, cpu_out);
  const Tensor gpu_x = h.device(x, shape);
  const Tensor gpu_out = d.in_place ? gpu_x : h.device_poisoned(shape);
  h.gpu().rms_norm(gpu_x, h.device(weight, {width}, d.weight), 1e-6f, gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_add(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const int64_t count = d.tokens * d.hidden;
  const std::vector<float> a = random_values(rng, count, 3.0f);
  const std::vector<float> b = random_values(rng, count, 3.0f);
  const Tensor cpu_out = h.host_poisoned({count});
  h.cpu().add(h.host(a, {count}), h.host(b, {count}), cpu_out);
  const Tensor gpu_a = h.device(a, {count});
  const Tensor gpu_out = d.in_place ? gpu_a : h.device_poisoned({count});
  h.gpu().add(gpu_a, h.device(b, {count}), gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_linear(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const int64_t in = d.hidden;
  const int64_t out = d.inter;
  const std::vector<float> x = random_values(rng, d.tokens * in, 1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(in));
  // F32/F16 weights keep their own precision: the CPU reads them unrounded.
  const std::vector<float> weight = random_values(rng, out * in, scale, d.weight);
  const std::vector<float> bias = random_values(rng, out, 0.5f);
  const Tensor cpu_bias = h.host(bias, {out}, DType::kBF16);
  const Tensor cpu_out = h.host_poisoned({d.tokens, out});
  h.cpu().linear(h.host(x, {d.tokens, in}), h.host(weight, {out, in}, d.weight),
                 d.bias ? &cpu_bias : nullptr, cpu_out);
  const Tensor gpu_bias = h.device(bias, {out}, DType::kBF16);
  const Tensor gpu_out = h.device_poisoned({d.tokens, out}, d.out_f32 ? DType::kF32 : DType::kBF16);
  h.gpu().linear(h.device(x, {d.tokens, in}), h.device(weight, {out, in}, d.weight),
                 d.bias ? &gpu_bias : nullptr, gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_rope(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<float> q = random_values(rng, d.tokens * d.heads * d.head_dim, 2.0f);
  const std::vector<float> k = random_values(rng, d.tokens * d.kv_heads * d.head_dim, 2.0f);
  std::vector<int32_t> positions(static_cast<size_t>(d.tokens));
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = i == 0 ? 0 : rng.below(32768);
  const double theta = 1e6;
  const Tensor cpu_q = h.host(q, {d.tokens, d.heads, d.head_dim});
  const Tensor cpu_k = h.host(k, {d.tokens, d.kv_heads, d.head_dim});
  h.cpu().rope(cpu_q, cpu_k, h.host_i32(positions, {d.tokens}), theta);
  const Tensor gpu_q = h.device(q, {d.tokens, d.heads, d.head_dim});
  const Tensor gpu_k = h.device(k, {d.tokens, d.kv_heads, d.head_dim});
  h.gpu().rope(gpu_q, gpu_k, h.device_i32(positions, {d.tokens}), theta);
  expect_close(c, "q", h.read(gpu_q), Harness::read_host(cpu_q), c.bound);
  expect_close(c, "k", h.read(gpu_k), Harness::read_host(cpu_k), c.bound);
}

void run_store_kv(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  // MLA (rope_dim > 0): latents [1, head_dim] as keys, rotary keys [1, rope_dim] as values.
  const int64_t value_heads = d.rope_dim > 0 ? 1 : d.kv_heads;
  const int64_t value_dim = d.rope_dim > 0 ? d.rope_dim : d.head_dim;
  const int64_t num_slots = d.rows * d.block_size;
  std::vector<int32_t> all_slots(static_cast<size_t>(num_slots));
  std::iota(all_slots.begin(), all_slots.end(), 0);
  for (size_t i = all_slots.size(); i > 1; --i)
    std::swap(all_slots[i - 1], all_slots[rng.below(static_cast<int64_t>(i))]);
  std::vector<int32_t> slots(static_cast<size_t>(d.tokens));
  for (size_t t = 0; t < slots.size(); ++t) slots[t] = t % 7 == 3 ? -1 : all_slots[t];  // padding
  const std::vector<int64_t> k_shape = {d.tokens, d.kv_heads, d.head_dim};
  const std::vector<int64_t> v_shape = {d.tokens, value_heads, value_dim};
  const std::vector<float> k = random_values(rng, d.tokens * d.kv_heads * d.head_dim, 2.0f);
  const std::vector<float> v = random_values(rng, d.tokens * value_heads * value_dim, 2.0f);
  const std::vector<int64_t> key_pool = {d.rows, d.block_size, d.kv_heads, d.head_dim};
  const std::vector<int64_t> value_pool = {d.rows, d.block_size, value_heads, value_dim};
  const KvCacheLayer cpu_cache{.key = h.host_poisoned(key_pool),
                               .value = h.host_poisoned(value_pool)};
  h.cpu().store_kv(h.host(k, k_shape), h.host(v, v_shape), h.host_i32(slots, {d.tokens}),
                   cpu_cache);
  const KvCacheLayer gpu_cache{.key = h.device_poisoned(key_pool),
                               .value = h.device_poisoned(value_pool)};
  h.gpu().store_kv(h.device(k, k_shape), h.device(v, v_shape), h.device_i32(slots, {d.tokens}),
                   gpu_cache);
  for (const auto& [name, cpu_pool, gpu_pool, width] :
       {std::tuple{"key", cpu_cache.key, gpu_cache.key, d.kv_heads * d.head_dim},
        std::tuple{"value", cpu_cache.value, gpu_cache.value, value_heads * value_dim}}) {
    const std::vector<float> got = h.read(gpu_pool);
    const std::vector<float> want = Harness::read_host(cpu_pool);
    // Written slots must match; every other slot must still hold the poison.
    std::vector<float> got_written, want_written;
    int64_t touched = 0;
    std::vector<bool> written(static_cast<size_t>(num_slots), false);
    for (const int32_t slot : slots) {
      if (slot >= 0) written[static_cast<size_t>(slot)] = true;
    }
    for (int64_t s = 0; s < num_slots; ++s) {
      for (int64_t i = 0; i < width; ++i) {
        const size_t index = static_cast<size_t>(s * width + i);
        if (written[static_cast<size_t>(s)]) {
          got_written.push_back(got[index]);
          want_written.push_back(want[index]);
        } else if (!std::isnan(got[index])) {
          ++touched;
        }
      }
    }
    EXPECT_EQ(touched, 0) << name << ": elements of unmapped slots were written";
    expect_close(c, name, got_written, want_written, c.bound);
  }
}

void run_paged_attention(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const auto num_seqs = static_cast<int64_t>(d.seqs.size());
  int64_t tokens = 0;
  int64_t num_blocks = 2;  // spares that no sequence uses
  int64_t max_blocks = std::max<int64_t>(1, d.table_blocks);
  for (const auto& [queries, context] : d.seqs) {
    tokens += queries;
    const int64_t blocks = (context + d.block_size - 1) / d.block_size;
    num_blocks += blocks;
    max_blocks = std::max(max_blocks, blocks);
  }
  // Each sequence's blocks drawn from a shuffled pool, tables padded with block 0 as the engine
  // pads them.
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  for (size_t i = pool.size(); i > 1; --i)
    std::swap(pool[i - 1], pool[rng.below(static_cast<int64_t>(i))]);
  std::vector<int32_t> query_start{0};
  std::vector<int32_t> context_lens;
  std::vector<int32_t> tables;
  size_t next = 0;
  for (const auto& [queries, context] : d.seqs) {
    query_start.push_back(query_start.back() + static_cast<int32_t>(queries));
    context_lens.push_back(static_cast<int32_t>(context));
    const int64_t blocks = (context + d.block_size - 1) / d.block_size;
    for (int64_t b = 0; b < max_blocks; ++b) tables.push_back(b < blocks ? pool[next++] : 0);
  }
  const std::vector<int64_t> pool_shape = {num_blocks, d.block_size, d.kv_heads, d.head_dim};
  const int64_t pool_count = num_blocks * d.block_size * d.kv_heads * d.head_dim;
  const std::vector<float> keys = random_values(rng, pool_count, 2.0f);
  const std::vector<float> values = random_values(rng, pool_count, 2.0f);
  const std::vector<float> q = random_values(rng, tokens * d.heads * d.head_dim, 2.0f);
  const std::vector<int64_t> q_shape = {tokens, d.heads, d.head_dim};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));

  int64_t max_query_len = 0;
  for (const auto& [queries, context] : d.seqs) max_query_len = std::max(max_query_len, queries);
  const AttentionInputs cpu_inputs{.query_start = h.host_i32(query_start, {num_seqs + 1}),
                                   .context_lens = h.host_i32(context_lens, {num_seqs}),
                                   .block_tables = h.host_i32(tables, {num_seqs, max_blocks}),
                                   .num_seqs = num_seqs,
                                   .max_query_len = max_query_len};
  const Tensor cpu_out = h.host_poisoned(q_shape);
  h.cpu().paged_attention(h.host(q, q_shape),
                          {.key = h.host(keys, pool_shape), .value = h.host(values, pool_shape)},
                          cpu_inputs, scale, cpu_out);
  const AttentionInputs gpu_inputs{.query_start = h.device_i32(query_start, {num_seqs + 1}),
                                   .context_lens = h.device_i32(context_lens, {num_seqs}),
                                   .block_tables = h.device_i32(tables, {num_seqs, max_blocks}),
                                   .num_seqs = num_seqs,
                                   .max_query_len = max_query_len};
  const Tensor gpu_out = h.device_poisoned(q_shape);
  h.gpu().paged_attention(
      h.device(q, q_shape),
      {.key = h.device(keys, pool_shape), .value = h.device(values, pool_shape)}, gpu_inputs, scale,
      gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

// One new token for each of these contexts (decode).
std::vector<std::pair<int64_t, int64_t>> decode_seqs(const std::vector<int64_t>& contexts) {
  std::vector<std::pair<int64_t, int64_t>> seqs;
  for (const int64_t context : contexts) seqs.emplace_back(1, context);
  return seqs;
}

// num_seqs decode sequences of mixed contexts up to `longest`, out of order: every fourth of
// context 1, the others spread over [2, longest] (one or many splits of decode attention).
std::vector<std::pair<int64_t, int64_t>> mixed_decode_seqs(int64_t num_seqs, int64_t longest) {
  std::vector<int64_t> contexts;
  for (int64_t i = 0; i < num_seqs; ++i) {
    contexts.push_back(i % 4 == 0 ? 1 : 2 + (i * 7919) % (longest - 1));
  }
  if (num_seqs > 1) contexts[1] = longest;
  return decode_seqs(contexts);
}

// DeepSeek-V3's YaRN inverse frequencies (rope_theta 1e4, factor 40 over 4096 positions, beta
// 32 and 1): the plain ones for high frequencies, divided by the factor for low ones, a linear
// ramp between. Or the plain ones (rope_theta 1e4).
std::vector<float> rope_inv_freq(int64_t dim, bool yarn) {
  const double base = 1e4;
  const double factor = 40.0;
  const double original_max = 4096.0;
  const auto width = static_cast<double>(dim);
  const auto correction_dim = [&](double rotations) {
    return width * std::log(original_max / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  };
  const double low = std::max(0.0, std::floor(correction_dim(32.0)));
  const double high = std::min(width - 1, std::ceil(correction_dim(1.0)));
  std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double extrapolated = 1.0 / std::pow(base, static_cast<double>(2 * i) / width);
    const double ramp =
        std::clamp((static_cast<double>(i) - low) / std::max(high - low, 1e-3), 0.0, 1.0);
    const double keep = 1.0 - ramp;  // 1: the extrapolated (plain) frequency
    inv_freq[static_cast<size_t>(i)] = static_cast<float>(
        yarn ? extrapolated / factor * (1.0 - keep) + extrapolated * keep : extrapolated);
  }
  return inv_freq;
}

void run_rope_pairs(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<int64_t> shape = {d.tokens, d.heads, d.head_dim};
  const std::vector<float> x = random_values(rng, d.tokens * d.heads * d.head_dim, 2.0f);
  std::vector<int32_t> positions(static_cast<size_t>(d.tokens));
  // Position 0, then anywhere in DeepSeek-V3's 163840.
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = i == 0 ? 0 : rng.below(163840);
  const std::vector<float> inv_freq = rope_inv_freq(d.head_dim, d.flag);
  const Tensor cpu_x = h.host(x, shape);
  h.cpu().rope_pairs(cpu_x, h.host_i32(positions, {d.tokens}), h.host(inv_freq, {d.head_dim / 2}),
                     d.factor);
  const Tensor gpu_x = h.device(x, shape);
  h.gpu().rope_pairs(gpu_x, h.device_i32(positions, {d.tokens}),
                     h.device(inv_freq, {d.head_dim / 2}, DType::kF32), d.factor);
  expect_close(c, "x", h.read(gpu_x), Harness::read_host(cpu_x), c.bound);
}

// Latent attention over a paged latent cache: sequences as in run_paged_attention, then
// d.rows padding tokens past the last sequence. Cache rows no sequence sees (spare blocks, the
// tail of each sequence's last block) hold NaN, so a kernel that reads past a context fails.
void run_latent_attention(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const int64_t latent_dim = d.head_dim;
  const int64_t rope_dim = d.rope_dim;
  const auto num_seqs = static_cast<int64_t>(d.seqs.size());
  int64_t tokens = d.rows;
  int64_t num_blocks = 2;  // spares that no sequence uses
  int64_t max_blocks = std::max<int64_t>(1, d.table_blocks);
  int64_t max_query_len = 0;
  int64_t max_context_len = 0;
  for (const auto& [queries, context] : d.seqs) {
    tokens += queries;
    const int64_t blocks = (context + d.block_size - 1) / d.block_size;
    num_blocks += blocks;
    max_blocks = std::max(max_blocks, blocks);
    max_query_len = std::max(max_query_len, queries);
    max_context_len = std::max(max_context_len, context);
  }
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  for (size_t i = pool.size(); i > 1; --i)
    std::swap(pool[i - 1], pool[rng.below(static_cast<int64_t>(i))]);
  std::vector<int32_t> query_start{0};
  std::vector<int32_t> context_lens;
  std::vector<int32_t> tables;
  std::vector<bool> seen(static_cast<size_t>(num_blocks * d.block_size), false);
  size_t next = 0;
  for (const auto& [queries, context] : d.seqs) {
    query_start.push_back(query_start.back() + static_cast<int32_t>(queries));
    context_lens.push_back(static_cast<int32_t>(context));
    const int64_t blocks = (context + d.block_size - 1) / d.block_size;
    const size_t table_row = tables.size();
    for (int64_t b = 0; b < max_blocks; ++b) tables.push_back(b < blocks ? pool[next++] : 0);
    for (int64_t j = 0; j < context; ++j) {
      const int64_t block = tables[table_row + static_cast<size_t>(j / d.block_size)];
      seen[static_cast<size_t>(block * d.block_size + j % d.block_size)] = true;
    }
  }
  const int64_t num_slots = num_blocks * d.block_size;
  std::vector<float> latents = random_values(rng, num_slots * latent_dim, 2.0f);
  std::vector<float> rope_keys = random_values(rng, num_slots * rope_dim, 2.0f);
  for (int64_t slot = 0; slot < num_slots; ++slot) {
    if (seen[static_cast<size_t>(slot)]) continue;
    std::fill_n(latents.begin() + slot * latent_dim, latent_dim, std::nanf(""));
    std::fill_n(rope_keys.begin() + slot * rope_dim, rope_dim, std::nanf(""));
  }
  const std::vector<int64_t> latent_shape = {num_blocks, d.block_size, 1, latent_dim};
  const std::vector<int64_t> rope_shape = {num_blocks, d.block_size, 1, rope_dim};
  const std::vector<int64_t> q_shape = {tokens, d.heads, latent_dim};
  const std::vector<int64_t> q_rope_shape = {tokens, d.heads, rope_dim};
  const std::vector<float> q_latent = random_values(rng, tokens * d.heads * latent_dim, 2.0f);
  const std::vector<float> q_rope = random_values(rng, tokens * d.heads * rope_dim, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(latent_dim + rope_dim));

  const auto inputs = [&](bool gpu) {
    const auto i32 = [&](const std::vector<int32_t>& v, std::vector<int64_t> shape) {
      return gpu ? h.device_i32(v, std::move(shape)) : h.host_i32(v, std::move(shape));
    };
    return AttentionInputs{.query_start = i32(query_start, {num_seqs + 1}),
                           .context_lens = i32(context_lens, {num_seqs}),
                           .block_tables = i32(tables, {num_seqs, max_blocks}),
                           .num_seqs = num_seqs,
                           .max_query_len = max_query_len,
                           .max_context_len = d.flag ? 0 : max_context_len};
  };
  const Tensor cpu_out = h.host_poisoned(q_shape);
  h.cpu().latent_attention(
      h.host(q_latent, q_shape), h.host(q_rope, q_rope_shape),
      {.key = h.host(latents, latent_shape), .value = h.host(rope_keys, rope_shape)}, inputs(false),
      scale, cpu_out);
  const Tensor gpu_out = h.device_poisoned(q_shape);
  h.gpu().latent_attention(
      h.device(q_latent, q_shape), h.device(q_rope, q_rope_shape),
      {.key = h.device(latents, latent_shape), .value = h.device(rope_keys, rope_shape)},
      inputs(true), scale, gpu_out);
  const std::vector<float> got = h.read(gpu_out);
  expect_close(c, "out", got, Harness::read_host(cpu_out), c.bound);
  // Padding rows are zeros, not merely close to the reference's.
  const auto padding_begin = static_cast<size_t>((tokens - d.rows) * d.heads * latent_dim);
  EXPECT_TRUE(std::all_of(got.begin() + static_cast<std::ptrdiff_t>(padding_begin), got.end(),
                          [](float value) { return value == 0.0f; }))
      << c.label << ": a padding row is not zero";
}

// out[t, h] = x[t, h] w[h]^T, w [heads, n, k] (inter = n, hidden = k), or x[t, h] w[h] for
// w [heads, k, n] when d.flag.
void run_head_linear(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const int64_t in = d.hidden;
  const int64_t out = d.inter;
  const std::vector<int64_t> x_shape = {d.tokens, d.heads, in};
  const std::vector<int64_t> w_shape =
      d.flag ? std::vector<int64_t>{d.heads, in, out} : std::vector<int64_t>{d.heads, out, in};
  const std::vector<int64_t> out_shape = {d.tokens, d.heads, out};
  const std::vector<float> x = random_values(rng, d.tokens * d.heads * in, 1.0f);
  const std::vector<float> weight =
      random_values(rng, d.heads * out * in, 1.0f / std::sqrt(static_cast<float>(in)));
  const Tensor cpu_out = h.host_poisoned(out_shape);
  h.cpu().head_linear(h.host(x, x_shape), h.host(weight, w_shape, DType::kBF16), d.flag, cpu_out);
  const Tensor gpu_out = h.device_poisoned(out_shape);
  h.gpu().head_linear(h.device(x, x_shape), h.device(weight, w_shape), d.flag, gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_silu_and_mul(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<float> gate_up = random_values(rng, d.tokens * 2 * d.inter, 4.0f);
  const Tensor cpu_out = h.host_poisoned({d.tokens, d.inter});
  h.cpu().silu_and_mul(h.host(gate_up, {d.tokens, 2 * d.inter}), cpu_out);
  const Tensor gpu_out = h.device_poisoned({d.tokens, d.inter});
  h.gpu().silu_and_mul(h.device(gate_up, {d.tokens, 2 * d.inter}), gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_router_topk(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<float> logits = random_values(rng, d.tokens * d.experts, 3.0f, DType::kF32);
  const std::vector<float> bias = random_values(rng, d.experts, 0.25f, DType::kF32);
  const Tensor cpu_bias = h.host(bias, {d.experts});
  const Tensor gpu_bias = h.device(bias, {d.experts}, DType::kF32);
  RouterSpec spec = d.router;
  spec.renormalize = d.flag;
  spec.selection_bias = d.bias ? &cpu_bias : nullptr;
  const Tensor cpu_weights = h.host_poisoned({d.tokens, d.k});
  const Tensor cpu_ids = h.host_poisoned({d.tokens, d.k}, DType::kI32);
  h.cpu().router_topk(h.host(logits, {d.tokens, d.experts}), spec, cpu_weights, cpu_ids);
  spec.selection_bias = d.bias ? &gpu_bias : nullptr;
  const Tensor gpu_weights = h.device_poisoned({d.tokens, d.k}, DType::kF32);
  const Tensor gpu_ids = h.device_poisoned({d.tokens, d.k}, DType::kI32);
  h.gpu().router_topk(h.device(logits, {d.tokens, d.experts}, DType::kF32), spec, gpu_weights,
                      gpu_ids);
  expect_close(c, "weights", h.read(gpu_weights), Harness::read_host(cpu_weights), c.bound);
  expect_close(c, "ids", h.read(gpu_ids), Harness::read_host(cpu_ids), 0.0);
}

// Distinct slots per token (as a router picks), some remote (-1) when the case says so, and
// positive weights.
void random_routing(Rng& rng, const Dims& d, std::vector<int32_t>& slots,
                    std::vector<float>& weights) {
  slots.assign(static_cast<size_t>(d.tokens * d.k), -1);
  weights.assign(static_cast<size_t>(d.tokens * d.k), 0.0f);
  if (!d.slot_rows.empty()) {
    // Exactly slot_rows[s] tokens of slot s, in shuffled token order.
    slots.clear();
    for (size_t s = 0; s < d.slot_rows.size(); ++s) {
      slots.insert(slots.end(), static_cast<size_t>(d.slot_rows[s]), static_cast<int32_t>(s));
    }
    ASSERT_EQ(d.k, 1);
    ASSERT_EQ(static_cast<int64_t>(slots.size()), d.tokens);
    for (size_t i = slots.size(); i > 1; --i) {
      std::swap(slots[i - 1], slots[static_cast<size_t>(rng.below(static_cast<int64_t>(i)))]);
    }
    for (float& weight : weights) weight = rng.uniform(0.05f, 1.0f);
    return;
  }
  std::vector<int32_t> order(static_cast<size_t>(d.experts));
  for (int64_t t = 0; t < d.tokens; ++t) {
    std::iota(order.begin(), order.end(), 0);
    for (int64_t j = 0; j < d.k; ++j) {
      const int64_t pick = j + rng.below(d.experts - j);
      std::swap(order[static_cast<size_t>(j)], order[static_cast<size_t>(pick)]);
      const size_t index = static_cast<size_t>(t * d.k + j);
      slots[index] = d.flag && rng.below(4) == 0 ? -1 : order[static_cast<size_t>(j)];
      weights[index] = rng.uniform(0.05f, 1.0f);
    }
  }
}

void run_moe_experts(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  std::vector<int32_t> slots;
  std::vector<float> weights;
  random_routing(rng, d, slots, weights);
  const std::vector<float> x = random_values(rng, d.tokens * d.hidden, 1.0f);
  const std::vector<int64_t> gate_up_shape = {d.experts, 2 * d.inter, d.hidden};
  const std::vector<int64_t> down_shape = {d.experts, d.hidden, d.inter};
  const std::vector<float> gate_up =
      random_values(rng, d.experts * 2 * d.inter * d.hidden,
                    1.0f / std::sqrt(static_cast<float>(d.hidden)), d.weight);
  const std::vector<float> down = random_values(
      rng, d.experts * d.hidden * d.inter, 1.0f / std::sqrt(static_cast<float>(d.inter)), d.weight);

  const Tensor cpu_out = h.host_poisoned({d.tokens, d.hidden});
  h.cpu().moe_experts(h.host(x, {d.tokens, d.hidden}), h.host_i32(slots, {d.tokens, d.k}),
                      h.host(weights, {d.tokens, d.k}),
                      {.gate_up = h.host(gate_up, gate_up_shape, d.weight),
                       .down = h.host(down, down_shape, d.weight)},
                      cpu_out);
  const Tensor gpu_out = h.device_poisoned({d.tokens, d.hidden});
  h.gpu().moe_experts(h.device(x, {d.tokens, d.hidden}), h.device_i32(slots, {d.tokens, d.k}),
                      h.device(weights, {d.tokens, d.k}, DType::kF32),
                      {.gate_up = h.device(gate_up, gate_up_shape, d.weight),
                       .down = h.device(down, down_shape, d.weight)},
                      gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

void run_moe_combine(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const std::vector<float> expert_out = random_values(rng, d.tokens * d.k * d.hidden, 2.0f);
  const std::vector<float> weights = random_values(rng, d.tokens * d.k, 1.0f, DType::kF32);
  const Tensor cpu_out = h.host_poisoned({d.tokens, d.hidden});
  h.cpu().moe_combine(h.host(expert_out, {d.tokens * d.k, d.hidden}),
                      h.host(weights, {d.tokens, d.k}), cpu_out);
  const Tensor gpu_out = h.device_poisoned({d.tokens, d.hidden});
  h.gpu().moe_combine(h.device(expert_out, {d.tokens * d.k, d.hidden}),
                      h.device(weights, {d.tokens, d.k}, DType::kF32), gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

// Expert parallelism's dispatch plan: tokens x k choices of `experts` logical experts, each with
// 1 to 3 replicas in distinct slots of rows (ranks) x inter (slots per rank). The GPU orders rows
// within a block as it likes, so the check follows each choice: the same block, its token and
// local slot at its row, and the same number of used rows per block. Outputs start as a sentinel
// (every entry must be written, -1 included).
void run_route_experts(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const int64_t ranks = d.rows;
  const int64_t slots_per_rank = d.inter;
  const int64_t width = 3;
  const int64_t capacity = d.tokens * d.k;
  std::vector<int32_t> count(static_cast<size_t>(d.experts));
  std::vector<int32_t> slots(static_cast<size_t>(d.experts * width), -1);
  std::vector<int32_t> free_slots(static_cast<size_t>(ranks * slots_per_rank));
  for (size_t s = 0; s < free_slots.size(); ++s) free_slots[s] = static_cast<int32_t>(s);
  for (int64_t e = 0; e < d.experts; ++e) {
    count[e] = 1 + rng.below(width);
    for (int32_t r = 0; r < count[e]; ++r) {
      slots[e * width + r] = free_slots[rng.below(static_cast<int64_t>(free_slots.size()))];
    }
  }
  std::vector<int32_t> ids(static_cast<size_t>(d.tokens * d.k));
  // flag: some choices are not routed (-1), and every seventh token is padding (token id -1).
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = d.flag && i % 5 == 2 ? -1 : rng.below(d.experts);
  std::vector<int32_t> token_ids(static_cast<size_t>(d.tokens));
  for (size_t t = 0; t < token_ids.size(); ++t) token_ids[t] = d.flag && t % 7 == 3 ? -1 : 5;
  // The counters start from 3 each: the kernel adds, never overwrites.
  const std::vector<int32_t> start_counts(static_cast<size_t>(d.experts), 3);
  Tensor cpu_counts;
  Tensor gpu_counts;
  const auto route = [&](bool gpu) {
    const auto i32 = [&](const std::vector<int32_t>& v, std::vector<int64_t> shape) {
      return gpu ? h.device_i32(v, std::move(shape)) : h.host_i32(v, std::move(shape));
    };
    (gpu ? gpu_counts : cpu_counts) = i32(start_counts, {d.experts});
    return ExpertRoute{.replica_count = i32(count, {d.experts}),
                       .replica_slots = i32(slots, {d.experts, width}),
                       .slots_per_rank = slots_per_rank,
                       .num_ranks = ranks,
                       .capacity = capacity,
                       .token_ids = i32(token_ids, {d.tokens}),
                       .load_counts = gpu ? gpu_counts : cpu_counts};
  };
  const std::vector<int32_t> sentinel_rows(static_cast<size_t>(ranks * capacity), 1234567);
  const std::vector<int32_t> sentinel_choices(ids.size(), 1234567);
  const Tensor cpu_tokens = h.host_i32(sentinel_rows, {ranks * capacity});
  const Tensor cpu_slots = h.host_i32(sentinel_rows, {ranks * capacity});
  const Tensor cpu_positions = h.host_i32(sentinel_choices, {d.tokens * d.k});
  h.cpu().route_experts(h.host_i32(ids, {d.tokens, d.k}), route(false), cpu_tokens, cpu_slots,
                        cpu_positions);
  const Tensor gpu_tokens = h.device_i32(sentinel_rows, {ranks * capacity});
  const Tensor gpu_slots = h.device_i32(sentinel_rows, {ranks * capacity});
  const Tensor gpu_positions = h.device_i32(sentinel_choices, {d.tokens * d.k});
  h.gpu().route_experts(h.device_i32(ids, {d.tokens, d.k}), route(true), gpu_tokens, gpu_slots,
                        gpu_positions);
  const std::vector<float> want_tokens = Harness::read_host(cpu_tokens);
  const std::vector<float> want_slots = Harness::read_host(cpu_slots);
  const std::vector<float> want_positions = Harness::read_host(cpu_positions);
  const std::vector<float> got_tokens = h.read(gpu_tokens);
  const std::vector<float> got_slots = h.read(gpu_slots);
  const std::vector<float> got_positions = h.read(gpu_positions);
  int64_t mismatches = 0;
  for (size_t a = 0; a < ids.size(); ++a) {
    const auto want = static_cast<int64_t>(want_positions[a]);
    const auto got = static_cast<int64_t>(got_positions[a]);
    if ((want < 0) != (got < 0)) {
      ++mismatches;
      continue;
    }
    if (want < 0) continue;
    mismatches += want / capacity != got / capacity ||
                  got_tokens[static_cast<size_t>(got)] != static_cast<float>(a / d.k) ||
                  got_slots[static_cast<size_t>(got)] != want_slots[static_cast<size_t>(want)];
  }
  for (int64_t b = 0; b < ranks; ++b) {
    int64_t want_used = 0;
    int64_t got_used = 0;
    for (int64_t r = b * capacity; r < (b + 1) * capacity; ++r) {
      want_used += want_tokens[static_cast<size_t>(r)] >= 0;
      got_used += got_tokens[static_cast<size_t>(r)] >= 0;
      // Unused rows are -1 in both outputs, never the sentinel.
      mismatches +=
          got_tokens[static_cast<size_t>(r)] > 1e6f ||
          (got_tokens[static_cast<size_t>(r)] < 0) != (got_slots[static_cast<size_t>(r)] < 0);
    }
    mismatches += want_used != got_used;
  }
  const std::vector<float> want_counts = Harness::read_host(cpu_counts);
  const std::vector<float> got_counts = h.read(gpu_counts);
  for (size_t e = 0; e < want_counts.size(); ++e) mismatches += want_counts[e] != got_counts[e];
  std::printf("[op] %-16s %-44s plan     mismatches %lld (%lld choices over %lld ranks)\n",
              c.op.c_str(), c.label.c_str(), static_cast<long long>(mismatches),
              static_cast<long long>(ids.size()), static_cast<long long>(ranks));
  EXPECT_EQ(mismatches, 0) << c.label;
}

void run_gather_rows(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  // The CPU gathers f32 rows; the GPU gathers rows of the case's dtype (a byte copy either way).
  const std::vector<float> x = random_values(rng, d.rows * d.hidden, 2.0f, d.weight);
  std::vector<int32_t> ids(static_cast<size_t>(d.tokens));
  // flag: every third id is -1 (an unused dispatch row), which gathers a zero row.
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = d.flag && i % 3 == 1 ? -1 : rng.below(d.rows);
  const Tensor cpu_out = h.host_poisoned({d.tokens, d.hidden});
  h.cpu().gather_rows(h.host(x, {d.rows, d.hidden}), h.host_i32(ids, {d.tokens}), cpu_out);
  const Tensor gpu_out = h.device_poisoned({d.tokens, d.hidden}, d.weight);
  h.gpu().gather_rows(h.device(x, {d.rows, d.hidden}, d.weight), h.device_i32(ids, {d.tokens}),
                      gpu_out);
  expect_close(c, "out", h.read(gpu_out), Harness::read_host(cpu_out), c.bound);
}

// The same (seed, first_index) on both backends gives the same bits in every dtype: tokens is the
// element count, rows the first index, hidden log2 of the half width, inter the centre.
void run_fill_random(Harness& h, const OpCase& c, Rng& rng) {
  const Dims& d = c.dims;
  const RandomFill fill{.seed = rng.next(),
                        .first_index = d.rows,
                        .center = static_cast<float>(d.inter),
                        .half_width = std::ldexp(1.0f, static_cast<int>(d.hidden))};
  const Tensor cpu_out = h.host_poisoned({d.tokens}, d.weight);
  h.cpu().fill_random(cpu_out, fill);
  const Tensor gpu_out = h.device_poisoned({d.tokens}, d.weight);
  h.gpu().fill_random(gpu_out, fill);
  const std::vector<float> want = Harness::read_host(cpu_out);
  expect_close(c, "out", h.read(gpu_out), want, c.bound);
  // The values cover the range: a fill of one constant would match itself too.
  const auto [low, high] = std::minmax_element(want.begin(), want.end());
  if (d.tokens >= 1000) {
    EXPECT_LT(*low, fill.center - 0.9f * fill.half_width) << c.label;
    EXPECT_GT(*high, fill.center + 0.9f * fill.half_width) << c.label;
  }
}

using Runner = void (*)(Harness&, const OpCase&, Rng&);
const std::map<std::string, Runner>& runners() {
  static const std::map<std::string, Runner> table = {
      {"embedding", run_embedding},
      {"rms_norm", run_rms_norm},
      {"add", run_add},
      {"linear", run_linear},
      {"rope", run_rope},
      {"rope_pairs", run_rope_pairs},
      {"store_kv", run_store_kv},
      {"paged_attention", run_paged_attention},
      {"latent_attention", run_latent_attention},
      {"head_linear", run_head_linear},
      {"silu_and_mul", run_silu_and_mul},
      {"router_topk", run_router_topk},
      {"moe_experts", run_moe_experts},
      {"moe_combine", run_moe_combine},
      {"gather_rows", run_gather_rows},
      {"route_experts", run_route_experts},
      {"fill_random", run_fill_random},
  };
  return table;
}

// Qwen3-30B-A3B: hidden 2048, 32 q / 4 kv heads of 128, 128 experts top-8 of 768, vocab 151936.
constexpr int64_t kHidden = 2048;
constexpr int64_t kHeads = 32;
constexpr int64_t kKvHeads = 4;
constexpr int64_t kHeadDim = 128;
constexpr int64_t kExperts = 128;
constexpr int64_t kTopk = 8;
constexpr int64_t kMoeInter = 768;
constexpr int64_t kVocab = 151936;
// DeepSeek-V2/V3's multi-head latent attention: kv_lora_rank 512, qk_rope_head_dim 64.
constexpr int64_t kMlaLatentDim = 512;
constexpr int64_t kMlaRopeDim = 64;

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases = {
      // embedding
      {"embedding", "qwen3_30b_bf16_table", {.tokens = 67, .hidden = kHidden, .rows = 4096}, 0.0},
      {"embedding",
       "odd_f32_table",
       {.tokens = 5, .hidden = 77, .rows = 31, .weight = DType::kF32},
       4e-3},
      {"embedding",
       "odd_f16_table",
       {.tokens = 3, .hidden = 65, .rows = 9, .weight = DType::kF16},
       4e-3},
      // rms_norm: per token, per head, in place, other weight dtypes
      {"rms_norm", "qwen3_30b_hidden", {.tokens = 67, .hidden = kHidden}, 4e-3},
      {"rms_norm",
       "qwen3_30b_per_head_in_place",
       {.tokens = 67, .heads = kHeads, .head_dim = kHeadDim, .in_place = true},
       4e-3},
      {"rms_norm",
       "odd_width_f32_weight",
       {.tokens = 3, .hidden = 77, .weight = DType::kF32},
       4e-3},
      {"rms_norm",
       "odd_width_f16_weight_wide",
       {.tokens = 2, .hidden = 1001, .weight = DType::kF16},
       4e-3},
      // add
      {"add",
       "qwen3_30b_residual_in_place",
       {.tokens = 67, .hidden = kHidden, .in_place = true},
       4e-3},
      {"add", "odd", {.tokens = 1, .hidden = 1001}, 4e-3},
      // linear: cuBLAS for bf16 weights, the WMMA fallback for F32/F16
      {"linear",
       "qwen3_30b_q_proj",
       {.tokens = 67, .hidden = kHidden, .inter = kHeads * kHeadDim},
       4e-3},
      {"linear",
       "qwen3_30b_o_proj_decode",
       {.tokens = 3, .hidden = kHeads * kHeadDim, .inter = kHidden},
       4e-3},
      {"linear",
       "qwen3_30b_router_f32_out",
       {.tokens = 67, .hidden = kHidden, .inter = kExperts, .out_f32 = true},
       2e-4},
      {"linear",
       "qwen3_30b_lm_head_f32_out",
       {.tokens = 3, .hidden = kHidden, .inter = kVocab, .out_f32 = true},
       2e-4},
      {"linear", "odd_bias", {.tokens = 5, .hidden = 77, .inter = 1000, .bias = true}, 4e-3},
      {"linear",
       "odd_f32_weight_f32_out",
       {.tokens = 67, .hidden = 200, .inter = 130, .weight = DType::kF32, .out_f32 = true},
       2e-2},
      {"linear",
       "odd_f16_weight_bias",
       {.tokens = 1, .hidden = 33, .inter = 65, .weight = DType::kF16, .bias = true},
       2e-2},
      {"linear", "zero_tokens", {.tokens = 0, .hidden = 64, .inter = 32}, 0.0},
      // rope
      {"rope",
       "qwen3_30b",
       {.tokens = 67, .heads = kHeads, .kv_heads = kKvHeads, .head_dim = kHeadDim},
       1e-2},
      {"rope", "odd", {.tokens = 3, .heads = 3, .kv_heads = 1, .head_dim = 18}, 1e-2},
      // rope_pairs: DeepSeek-V3's q (128 heads) and k (one shared head) rotary parts of 64
      {"rope_pairs",
       "deepseek_v3_q_yarn",
       {.tokens = 67, .heads = 128, .head_dim = kMlaRopeDim, .flag = true, .factor = 0.7f},
       4e-3},
      {"rope_pairs",
       "deepseek_v3_k_yarn",
       {.tokens = 67, .heads = 1, .head_dim = kMlaRopeDim, .flag = true, .factor = 0.7f},
       4e-3},
      {"rope_pairs", "plain_factor_1", {.tokens = 5, .heads = 128, .head_dim = kMlaRopeDim}, 4e-3},
      {"rope_pairs", "odd", {.tokens = 3, .heads = 3, .head_dim = 18, .factor = 1.3f}, 4e-3},
      // store_kv
      {"store_kv",
       "qwen3_30b",
       {.tokens = 67, .kv_heads = kKvHeads, .head_dim = kHeadDim, .rows = 9, .block_size = 16},
       0.0},
      {"store_kv",
       "odd",
       {.tokens = 11, .kv_heads = 1, .head_dim = 18, .rows = 4, .block_size = 5},
       0.0},
      // MLA: a latent of 512 as the key, a rotary key of 64 as the value
      {"store_kv",
       "deepseek_latent_512_rope_64",
       {.tokens = 67,
        .kv_heads = 1,
        .head_dim = kMlaLatentDim,
        .rows = 9,
        .block_size = 16,
        .rope_dim = kMlaRopeDim},
       0.0},
      {"store_kv",
       "mla_odd",
       {.tokens = 11, .kv_heads = 1, .head_dim = 32, .rows = 4, .block_size = 5, .rope_dim = 8},
       0.0},
      // paged attention: decode, prefill, chunked prefill, long decode, several sequences
      {"paged_attention",
       "qwen3_30b_mixed_batch",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .block_size = 16,
        .seqs = {{1, 37}, {17, 17}, {5, 40}, {1, 300}, {1, 1}}},
       8e-3},
      {"paged_attention",
       "qwen3_30b_prefill_64",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .block_size = 16,
        .seqs = {{64, 64}}},
       8e-3},
      {"paged_attention",
       "odd_head_dim_80_group_3",
       {.heads = 6,
        .kv_heads = 2,
        .head_dim = 80,
        .block_size = 5,
        .seqs = {{3, 11}, {1, 6}, {7, 7}}},
       8e-3},
      {"paged_attention",
       "tiny_fixture_shape",
       {.heads = 4, .kv_heads = 2, .head_dim = 16, .block_size = 16, .seqs = {{9, 9}, {1, 33}}},
       8e-3},
      // One new token per sequence: a block per (sequence, KV head) (decode_attention.cu)
      {"paged_attention",
       "qwen3_30b_decode_batch",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .seqs = {{1, 1}, {1, 37}, {1, 300}, {1, 1024}, {1, 257}, {1, 256}}},
       8e-3},
      {"paged_attention",
       "decode_head_dim_80_group_3",
       {.heads = 6, .kv_heads = 2, .head_dim = 80, .block_size = 5, .seqs = {{1, 11}, {1, 600}}},
       8e-3},
      {"paged_attention",
       "decode_tiny_fixture_shape",
       {.heads = 4, .kv_heads = 2, .head_dim = 16, .seqs = {{1, 9}, {1, 33}}},
       8e-3},
      // Split-KV: one split and many, splits past a sequence's end, group sizes 1 to 16.
      {"paged_attention",
       "decode_batch_1_context_1",
       {.heads = kHeads, .kv_heads = kKvHeads, .head_dim = kHeadDim, .seqs = decode_seqs({1})},
       8e-3},
      {"paged_attention",
       "decode_batch_1_context_4000",
       {.heads = kHeads, .kv_heads = kKvHeads, .head_dim = kHeadDim, .seqs = decode_seqs({4000})},
       8e-3},
      {"paged_attention",
       "decode_batch_64_mixed",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .seqs = mixed_decode_seqs(64, 2500)},
       8e-3},
      {"paged_attention",
       "decode_batch_256_mixed",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .seqs = mixed_decode_seqs(256, 600)},
       8e-3},
      {"paged_attention",
       "decode_table_wider_than_needed",  // a graph bucket: a padding sequence, idle splits
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .block_size = 7,
        .seqs = decode_seqs({1, 100, 0, 700}),
        .table_blocks = 600},
       8e-3},
      {"paged_attention",
       "decode_group_8_head_dim_64",
       {.heads = 16, .kv_heads = 2, .head_dim = 64, .seqs = decode_seqs({5, 130, 1500})},
       8e-3},
      {"paged_attention",
       "decode_group_1_head_dim_128",
       {.heads = 4, .kv_heads = 4, .head_dim = 128, .seqs = decode_seqs({1, 77, 2000})},
       8e-3},
      {"paged_attention",
       "decode_group_16_head_dim_128",
       {.heads = 32, .kv_heads = 2, .head_dim = 128, .seqs = decode_seqs({33, 900})},
       8e-3},
      {"paged_attention",
       "decode_group_16_head_dim_48",
       {.heads = 16, .kv_heads = 1, .head_dim = 48, .block_size = 3, .seqs = decode_seqs({2, 300})},
       8e-3},
      // 16 or more new tokens in a sequence: the tensor-core tiles (flash_attention.cu)
      {"paged_attention",
       "qwen3_30b_prefill_300_tiles",
       {.heads = kHeads, .kv_heads = kKvHeads, .head_dim = kHeadDim, .seqs = {{300, 300}}},
       8e-3},
      {"paged_attention",
       "qwen3_30b_chunked_prefill_mixed",
       {.heads = kHeads,
        .kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .seqs = {{100, 230}, {1, 77}, {64, 64}, {16, 500}, {65, 65}}},
       8e-3},
      {"paged_attention",
       "head_dim_80_prefill_tiles",
       {.heads = 6, .kv_heads = 2, .head_dim = 80, .block_size = 5, .seqs = {{40, 40}, {1, 20}}},
       8e-3},
      {"paged_attention",
       "zero_tokens",
       {.heads = 4, .kv_heads = 2, .head_dim = 16, .seqs = {}},
       0.0},
      // latent_attention (head_dim: the latent width L, rope_dim: R, rows: padding tokens)
      {"latent_attention",
       "deepseek_decode_h16",
       {.heads = 16,
        .head_dim = kMlaLatentDim,
        .seqs = decode_seqs({1, 17, 300, 1100, 2049, 33}),
        .rope_dim = kMlaRopeDim},
       8e-3},
      {"latent_attention",
       "deepseek_prefill_mixed_h16_padding",
       {.heads = 16,
        .head_dim = kMlaLatentDim,
        .rows = 3,
        .seqs = {{40, 40}, {1, 1030}, {17, 50}, {1, 0}, {5, 5}, {1, 64}},
        .rope_dim = kMlaRopeDim},
       8e-3},
      {"latent_attention",
       "deepseek_v3_decode_h128_wide_blocks",  // 32-head blocks (enough of them)
       {.heads = 128,
        .head_dim = kMlaLatentDim,
        .seqs = mixed_decode_seqs(72, 600),
        .rope_dim = kMlaRopeDim},
       8e-3},
      {"latent_attention",
       "deepseek_v3_decode_h128_batch_2",
       {.heads = 128,
        .head_dim = kMlaLatentDim,
        .seqs = decode_seqs({1500, 7}),
        .rope_dim = kMlaRopeDim},
       8e-3},
      {"latent_attention",
       "h40_prefill_wide_partial_group",
       {.heads = 40, .head_dim = kMlaLatentDim, .seqs = {{140, 160}}, .rope_dim = kMlaRopeDim},
       8e-3},
      {"latent_attention",
       "odd_l96_r24_h20_block_5",
       {.heads = 20,
        .head_dim = 96,
        .rows = 1,
        .block_size = 5,
        .seqs = {{1, 11}, {7, 30}, {1, 1}, {1, 260}},
        .table_blocks = 60,
        .rope_dim = 24},
       8e-3},
      {"latent_attention",
       "tiny_l32_r8_h4",
       {.heads = 4,
        .head_dim = 32,
        .rows = 1,
        .flag = true,  // an unknown longest context: the widest split, most of it idle
        .seqs = {{9, 9}, {1, 33}, {3, 20}},
        .rope_dim = 8},
       8e-3},
      {"latent_attention",
       "zero_tokens",
       {.heads = 4, .head_dim = 32, .seqs = {}, .rope_dim = 8},
       0.0},
      // head_linear: DeepSeek's absorbed up-projections, q_nope into the latent ([h, k, n]) and
      // the latent output back to the value heads ([h, n, k])
      {"head_linear",
       "deepseek_q_absorb_decode",
       {.tokens = 1, .hidden = 128, .inter = kMlaLatentDim, .heads = 16, .flag = true},
       4e-3},
      {"head_linear",
       "deepseek_q_absorb_batch",
       {.tokens = 77, .hidden = 128, .inter = kMlaLatentDim, .heads = 16, .flag = true},
       4e-3},
      {"head_linear",
       "deepseek_v_up_decode",
       {.tokens = 1, .hidden = kMlaLatentDim, .inter = 128, .heads = 16},
       4e-3},
      {"head_linear",
       "deepseek_v_up_batch",
       {.tokens = 77, .hidden = kMlaLatentDim, .inter = 128, .heads = 16},
       4e-3},
      {"head_linear",
       "k_major_512_to_128",
       {.tokens = 77, .hidden = kMlaLatentDim, .inter = 128, .heads = 16, .flag = true},
       4e-3},
      {"head_linear",
       "n_major_128_to_512",
       {.tokens = 1, .hidden = 128, .inter = kMlaLatentDim, .heads = 16},
       4e-3},
      {"head_linear", "odd", {.tokens = 5, .hidden = 40, .inter = 24, .heads = 3}, 4e-3},
      {"head_linear",
       "odd_k_major",
       {.tokens = 5, .hidden = 40, .inter = 24, .heads = 3, .flag = true},
       4e-3},
      {"head_linear", "zero_tokens", {.tokens = 0, .hidden = 64, .inter = 32, .heads = 2}, 0.0},
      // silu_and_mul
      {"silu_and_mul", "qwen3_30b_moe_inter", {.tokens = 67, .inter = kMoeInter}, 8e-3},
      {"silu_and_mul", "odd", {.tokens = 5, .inter = 33}, 8e-3},
      // router
      {"router_topk",
       "qwen3_30b_renormalised",
       {.tokens = 67, .experts = kExperts, .k = kTopk, .flag = true},
       1e-5},
      {"router_topk", "qwen3_30b_plain", {.tokens = 67, .experts = kExperts, .k = kTopk}, 1e-5},
      {"router_topk", "odd", {.tokens = 3, .experts = 9, .k = 3, .flag = true}, 1e-5},
      {"router_topk",
       "qwen15_60_experts",
       {.tokens = 5, .experts = 60, .k = 4, .flag = true},
       1e-5},
      // DeepSeek-V3: sigmoid, biased choice among the 4 best of 8 groups (top-2 sums), 2.5x
      {"router_topk",
       "deepseek_v3_grouped_sigmoid_bias",
       {.tokens = 67,
        .experts = 256,
        .k = 8,
        .bias = true,
        .flag = true,
        .router = {.sigmoid = true,
                   .num_groups = 8,
                   .topk_groups = 4,
                   .group_score_top2_sum = true,
                   .scaling = 2.5f}},
       1e-5},
      // DeepSeek-V2: softmax, the 3 best of 8 groups of 20 by their best expert, 16x
      {"router_topk",
       "deepseek_v2_group_limited",
       {.tokens = 67,
        .experts = 160,
        .k = 6,
        .router = {.num_groups = 8, .topk_groups = 3, .scaling = 16.0f}},
       1e-5},
      {"router_topk",
       "odd_groups_of_3",
       {.tokens = 3,
        .experts = 12,
        .k = 3,
        .bias = true,
        .flag = true,
        .router = {.sigmoid = true,
                   .num_groups = 4,
                   .topk_groups = 2,
                   .group_score_top2_sum = true,
                   .scaling = 1.5f}},
       1e-5},
      {"router_topk",
       "64_groups_of_4",  // two groups a lane
       {.tokens = 9,
        .experts = 256,
        .k = 8,
        .bias = true,
        .router =
            {.sigmoid = true, .num_groups = 64, .topk_groups = 5, .group_score_top2_sum = true}},
       1e-5},
      {"router_topk",
       "sigmoid_bias_ungrouped",
       {.tokens = 7, .experts = 64, .k = 6, .bias = true, .router = {.sigmoid = true}},
       1e-5},
      // MoE experts
      {"moe_experts",
       "qwen3_30b_128_slots_top8",
       {.tokens = 37, .hidden = kHidden, .inter = kMoeInter, .experts = kExperts, .k = kTopk},
       2e-2},
      {"moe_experts",
       "qwen3_30b_decode_remote_slots",
       {.tokens = 2,
        .hidden = kHidden,
        .inter = kMoeInter,
        .experts = kExperts,
        .k = kTopk,
        .flag = true},
       2e-2},
      {"moe_experts",
       "odd_sizes",
       {.tokens = 67, .hidden = 200, .inter = 72, .experts = 5, .k = 3},
       2e-2},
      {"moe_experts",
       "odd_f32_weights",
       {.tokens = 3, .hidden = 40, .inter = 24, .experts = 4, .k = 2, .weight = DType::kF32},
       2e-2},
      {"moe_experts",
       "odd_f16_weights_remote",
       {.tokens = 9,
        .hidden = 72,
        .inter = 40,
        .experts = 6,
        .k = 2,
        .weight = DType::kF16,
        .flag = true},
       2e-2},
      {"moe_experts",
       "tiny_fixture_shape",
       {.tokens = 10, .hidden = 64, .inter = 32, .experts = 8, .k = 2},
       2e-2},
      {"moe_experts",
       "ep_rows_k1",
       {.tokens = 130, .hidden = 64, .inter = 32, .experts = 3, .k = 1},
       2e-2},
      // Each grouped GEMM tile (moe.cu picks 16, 32 or 128 rows by the rows per slot): slots
      // of 0, 1, a tile and a tile plus one rows; K and N not multiples of the tile's.
      {"moe_experts",
       "decode_tile_16_slot_rows",
       {.tokens = 40,
        .hidden = 72,
        .inter = 24,
        .experts = 10,
        .k = 1,
        .slot_rows = {0, 1, 16, 17, 3, 0, 1, 2, 0, 0}},
       2e-2},
      {"moe_experts",
       "batch_tile_32_slot_rows",
       {.tokens = 150,
        .hidden = 136,
        .inter = 40,
        .experts = 6,
        .k = 1,
        .slot_rows = {32, 33, 0, 1, 64, 20}},
       2e-2},
      {"moe_experts",
       "prefill_tile_128_slot_rows",
       {.tokens = 685,
        .hidden = 72,
        .inter = 24,
        .experts = 6,
        .k = 1,
        .slot_rows = {128, 0, 1, 129, 300, 127}},
       2e-2},
      {"moe_experts",
       "prefill_tile_128_top2",
       {.tokens = 600, .hidden = 256, .inter = 128, .experts = 4, .k = 2},
       2e-2},
      {"moe_experts",
       "zero_tokens",
       {.tokens = 0, .hidden = 64, .inter = 32, .experts = 8, .k = 2},
       0.0},
      // moe_combine
      {"moe_combine", "qwen3_30b", {.tokens = 67, .hidden = kHidden, .k = kTopk}, 4e-3},
      {"moe_combine", "odd", {.tokens = 3, .hidden = 200, .k = 3}, 4e-3},
      // gather_rows: 16-, 4-, 2-byte copy paths
      {"gather_rows", "qwen3_30b_bf16", {.tokens = 37, .hidden = kHidden, .rows = 100}, 0.0},
      {"gather_rows", "odd_f32", {.tokens = 5, .hidden = 7, .rows = 9, .weight = DType::kF32}, 0.0},
      {"gather_rows", "odd_bf16", {.tokens = 6, .hidden = 3, .rows = 4}, 0.0},
      {"gather_rows",
       "unused_rows_zero",
       {.tokens = 40, .hidden = kHidden, .rows = 9, .flag = true},
       0.0},
      // route_experts: Qwen3-30B-A3B over 4 ranks at decode and prefill sizes, uneven ranks
      {"route_experts",
       "qwen3_30b_4_ranks_decode",
       {.tokens = 64, .inter = 40, .experts = 128, .k = 8, .rows = 4},
       0.0},
      {"route_experts",
       "qwen3_30b_3_ranks_prefill",
       {.tokens = 2048, .inter = 50, .experts = 128, .k = 8, .rows = 3, .flag = true},
       0.0},
      {"route_experts",
       "one_rank_one_token",
       {.tokens = 1, .inter = 8, .experts = 8, .k = 2, .rows = 1},
       0.0},
      // fill_random: exact on every dtype, from offset 0 and from the middle of a stream
      {"fill_random", "bf16_weights", {.tokens = 100003, .hidden = -5, .rows = 0}, 0.0},
      {"fill_random",
       "bf16_norm_offset",
       {.tokens = 4097, .hidden = -5, .inter = 1, .rows = 123456789},
       0.0},
      {"fill_random", "f32", {.tokens = 1001, .hidden = 0, .rows = 7, .weight = DType::kF32}, 0.0},
      {"fill_random", "f16", {.tokens = 999, .hidden = -3, .rows = 5, .weight = DType::kF16}, 0.0},
  };
  return cases;
}

class OpTest : public testing::TestWithParam<OpCase> {};

TEST_P(OpTest, CudaMatchesCpu) {
  const OpCase& c = GetParam();
  const auto runner = runners().find(c.op);
  ASSERT_NE(runner, runners().end()) << "no runner for op " << c.op;
  // A fresh seed per case, fixed so a failure reproduces.
  Rng rng(std::hash<std::string>{}(c.op + "/" + c.label));
  Harness harness;
  runner->second(harness, c, rng);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpTest, testing::ValuesIn(op_cases()),
                         [](const testing::TestParamInfo<OpCase>& param_info) {
                           return param_info.param.op + "_" + param_info.param.label;
                         });

// Every op in the Backend interface has at least one case.
TEST(OpTable, CoversEveryOp) {
  std::map<std::string, int> seen;
  for (const OpCase& c : op_cases()) ++seen[c.op];
  for (const auto& [op, runner] : runners()) EXPECT_GT(seen[op], 0) << op;
  EXPECT_EQ(runners().size(), 17u);
}

// A kernel fault surfaces as a tidal::Error naming the device, not an abort.
TEST(CudaErrors, BadShapesThrowTidalError) {
  Harness h;
  const Tensor a = h.device_poisoned({4, 8});
  const Tensor b = h.device_poisoned({4, 9});
  EXPECT_THROW(h.gpu().add(a, b, a), Error);
  EXPECT_THROW(h.gpu().silu_and_mul(a, b), Error);
}

}  // namespace
}  // namespace tidal
