// The fused ops on the CUDA backend: add_rms_norm against add then rms_norm, and
// qk_norm_rope_store against rms_norm of q and k per head, rope, store_kv. Each must give the
// unfused chain's bytes exactly on the same backend (the model's greedy tokens must not change),
// every output poisoned with NaN first (an unwritten element fails), and be as close to the CPU
// reference as op_test.cpp's bounds allow: 4e-3 for the residual (one bf16 rounding, as add), 8e-3
// for the norm output (the rounded residual, then the output's own rounding), 1e-2 for q and k and
// the cached keys (rope's bound, which already covers the norm's rounding before it), 0 for the
// cached values (a copy). Inputs at tokens 1, 7 and 300 for Qwen3-30B-A3B's shapes (hidden 2048,
// 32/4 heads of 128), a head_dim of 64, the tiny fixture's (hidden 64, 4/2 heads of 16) and odd
// ones; some slots -1 (padding, not stored).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "op_harness.h"
#include "test_rng.h"

namespace tidal {
namespace {

constexpr float kEps = 1e-6f;
constexpr double kTheta = 1e6;

using testing_util::Rng;

// Values representable in bf16, so both backends read the same numbers.
std::vector<float> random_values(Rng& rng, int64_t count, float scale, float offset = 0.0f) {
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = bf16_to_f32(f32_to_bf16(offset + rng.uniform(-scale, scale)));
  return values;
}

using testing_util::Harness;

// Bytes of the fused result that differ from the unfused chain's (both on the GPU).
int64_t differing_bytes(Harness& h, const Tensor& fused, const Tensor& chain) {
  const std::vector<std::byte> a = h.read_bytes(fused);
  const std::vector<std::byte> b = h.read_bytes(chain);
  if (a.size() != b.size()) return static_cast<int64_t>(std::max(a.size(), b.size()));
  int64_t count = 0;
  for (size_t i = 0; i < a.size(); ++i) count += a[i] != b[i];
  return count;
}

// max |got - want| / max |want|; a non-finite `got` counts in *nonfinite.
double normalized_error(const std::vector<float>& got, const std::vector<float>& want,
                        int64_t* nonfinite) {
  if (got.size() != want.size()) {
    ADD_FAILURE() << "sizes differ: " << got.size() << " vs " << want.size();
    return INFINITY;
  }
  double max_diff = 0;
  double max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++*nonfinite;
      continue;
    }
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

struct FusedCase {
  std::string op;
  std::string label;
  int64_t tokens = 0;
  int64_t hidden = 0;  // add_rms_norm
  int64_t heads = 0;   // qk_norm_rope_store
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  DType weight = DType::kBF16;
};

void run_add_rms_norm(Harness& h, const FusedCase& c, Rng& rng) {
  const std::vector<int64_t> shape = {c.tokens, c.hidden};
  const std::vector<float> residual = random_values(rng, c.tokens * c.hidden, 3.0f);
  const std::vector<float> x = random_values(rng, c.tokens * c.hidden, 3.0f);
  const std::vector<float> weight = random_values(rng, c.hidden, 0.5f, 1.0f);
  const Tensor gpu_weight = h.device(weight, {c.hidden}, c.weight);
  const Tensor gpu_x = h.device(x, shape);

  const Tensor chain_residual = h.device(residual, shape);
  const Tensor chain_out = h.device_poisoned(shape);
  h.gpu().add(chain_residual, gpu_x, chain_residual);
  h.gpu().rms_norm(chain_residual, gpu_weight, kEps, chain_out);
  const Tensor fused_residual = h.device(residual, shape);
  const Tensor fused_out = h.device_poisoned(shape);
  h.gpu().add_rms_norm(fused_residual, gpu_x, gpu_weight, kEps, fused_out);
  const int64_t residual_diff = differing_bytes(h, fused_residual, chain_residual);
  const int64_t out_diff = differing_bytes(h, fused_out, chain_out);

  const Tensor cpu_residual = h.host(residual, shape);
  const Tensor cpu_out = h.host_poisoned(shape);
  h.cpu().add_rms_norm(cpu_residual, h.host(x, shape), h.host(weight, {c.hidden}, c.weight), kEps,
                       cpu_out);
  int64_t nonfinite = 0;
  const double residual_error =
      normalized_error(h.read(fused_residual), Harness::read_host(cpu_residual), &nonfinite);
  const double out_error =
      normalized_error(h.read(fused_out), Harness::read_host(cpu_out), &nonfinite);

  std::printf(
      "[op] fused %-18s %-22s bytes differing from the chain: residual %lld, out %lld; "
      "cpu error residual %.3g (bound 4e-3), out %.3g (bound 8e-3)\n",
      c.op.c_str(), c.label.c_str(), static_cast<long long>(residual_diff),
      static_cast<long long>(out_diff), residual_error, out_error);
  EXPECT_EQ(residual_diff, 0) << "residual differs from add()";
  EXPECT_EQ(out_diff, 0) << "out differs from add() then rms_norm()";
  EXPECT_EQ(nonfinite, 0) << "unwritten or non-finite elements";
  EXPECT_LE(residual_error, 4e-3);
  EXPECT_LE(out_error, 8e-3);
}

void run_qk_norm_rope_store(Harness& h, const FusedCase& c, Rng& rng) {
  const int64_t block_size = 16;
  const int64_t num_blocks = c.tokens / block_size + 3;
  const int64_t num_slots = num_blocks * block_size;
  const int64_t kv_width = c.kv_heads * c.head_dim;
  std::vector<int32_t> all_slots(static_cast<size_t>(num_slots));
  std::iota(all_slots.begin(), all_slots.end(), 0);
  for (size_t i = all_slots.size(); i > 1; --i)
    std::swap(all_slots[i - 1], all_slots[rng.below(static_cast<int64_t>(i))]);
  std::vector<int32_t> slots(static_cast<size_t>(c.tokens));
  for (size_t t = 0; t < slots.size(); ++t) slots[t] = t % 7 == 3 ? -1 : all_slots[t];
  std::vector<int32_t> positions(static_cast<size_t>(c.tokens));
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = i == 0 ? 0 : rng.below(32768);
  const std::vector<int64_t> q_shape = {c.tokens, c.heads, c.head_dim};
  const std::vector<int64_t> kv_shape = {c.tokens, c.kv_heads, c.head_dim};
  const std::vector<int64_t> pool = {num_blocks, block_size, c.kv_heads, c.head_dim};
  const std::vector<float> q = random_values(rng, c.tokens * c.heads * c.head_dim, 2.0f);
  const std::vector<float> k = random_values(rng, c.tokens * kv_width, 2.0f);
  const std::vector<float> v = random_values(rng, c.tokens * kv_width, 2.0f);
  const std::vector<float> q_norm = random_values(rng, c.head_dim, 0.5f, 1.0f);
  const std::vector<float> k_norm = random_values(rng, c.head_dim, 0.5f, 1.0f);
  const Tensor gpu_q_norm = h.device(q_norm, {c.head_dim}, c.weight);
  const Tensor gpu_k_norm = h.device(k_norm, {c.head_dim}, c.weight);
  const Tensor gpu_positions = h.device_i32(positions, {static_cast<int64_t>(positions.size())});
  const Tensor gpu_slots = h.device_i32(slots, {static_cast<int64_t>(slots.size())});
  const Tensor gpu_v = h.device(v, kv_shape);

  const Tensor chain_q = h.device(q, q_shape);
  const Tensor chain_k = h.device(k, kv_shape);
  const KvCacheLayer chain_cache{.key = h.device_poisoned(pool), .value = h.device_poisoned(pool)};
  h.gpu().rms_norm(chain_q, gpu_q_norm, kEps, chain_q);
  h.gpu().rms_norm(chain_k, gpu_k_norm, kEps, chain_k);
  h.gpu().rope(chain_q, chain_k, gpu_positions, kTheta);
  h.gpu().store_kv(chain_k, gpu_v, gpu_slots, chain_cache);
  const Tensor fused_q = h.device(q, q_shape);
  const Tensor fused_k = h.device(k, kv_shape);
  const KvCacheLayer fused_cache{.key = h.device_poisoned(pool), .value = h.device_poisoned(pool)};
  h.gpu().qk_norm_rope_store(fused_q, fused_k, gpu_v, gpu_q_norm, gpu_k_norm, kEps, gpu_positions,
                             kTheta, gpu_slots, fused_cache);
  // The whole pools, poison included: a slot the chain leaves alone must stay alone.
  const int64_t q_diff = differing_bytes(h, fused_q, chain_q);
  const int64_t k_diff = differing_bytes(h, fused_k, chain_k);
  const int64_t key_diff = differing_bytes(h, fused_cache.key, chain_cache.key);
  const int64_t value_diff = differing_bytes(h, fused_cache.value, chain_cache.value);

  const Tensor cpu_q = h.host(q, q_shape);
  const Tensor cpu_k = h.host(k, kv_shape);
  const KvCacheLayer cpu_cache{.key = h.host_poisoned(pool), .value = h.host_poisoned(pool)};
  h.cpu().qk_norm_rope_store(
      cpu_q, cpu_k, h.host(v, kv_shape), h.host(q_norm, {c.head_dim}, c.weight),
      h.host(k_norm, {c.head_dim}, c.weight), kEps,
      h.host_i32(positions, {static_cast<int64_t>(positions.size())}), kTheta,
      h.host_i32(slots, {static_cast<int64_t>(slots.size())}), cpu_cache);
  int64_t nonfinite = 0;
  const double q_error = normalized_error(h.read(fused_q), Harness::read_host(cpu_q), &nonfinite);
  const double k_error = normalized_error(h.read(fused_k), Harness::read_host(cpu_k), &nonfinite);
  // The written slots of the pools against the CPU's; the others must still hold the poison.
  std::vector<bool> written(static_cast<size_t>(num_slots), false);
  for (const int32_t slot : slots) {
    if (slot >= 0) written[static_cast<size_t>(slot)] = true;
  }
  double pool_error[2] = {0, 0};
  int64_t touched = 0;
  const Tensor gpu_pools[2] = {fused_cache.key, fused_cache.value};
  const Tensor cpu_pools[2] = {cpu_cache.key, cpu_cache.value};
  for (int p = 0; p < 2; ++p) {
    const std::vector<float> got = h.read(gpu_pools[p]);
    const std::vector<float> want = Harness::read_host(cpu_pools[p]);
    std::vector<float> got_written;
    std::vector<float> want_written;
    for (int64_t s = 0; s < num_slots; ++s) {
      for (int64_t i = 0; i < kv_width; ++i) {
        const size_t index = static_cast<size_t>(s * kv_width + i);
        if (written[static_cast<size_t>(s)]) {
          got_written.push_back(got[index]);
          want_written.push_back(want[index]);
        } else if (!std::isnan(got[index])) {
          ++touched;
        }
      }
    }
    pool_error[p] = normalized_error(got_written, want_written, &nonfinite);
  }

  std::printf(
      "[op] fused %-18s %-22s bytes differing from the chain: q %lld, k %lld, key cache "
      "%lld, value cache %lld; cpu error q %.3g, k %.3g, keys %.3g (bound 1e-2), values "
      "%.3g (bound 0)\n",
      c.op.c_str(), c.label.c_str(), static_cast<long long>(q_diff), static_cast<long long>(k_diff),
      static_cast<long long>(key_diff), static_cast<long long>(value_diff), q_error, k_error,
      pool_error[0], pool_error[1]);
  EXPECT_EQ(q_diff, 0) << "q differs from rms_norm then rope";
  EXPECT_EQ(k_diff, 0) << "k differs from rms_norm then rope";
  EXPECT_EQ(key_diff, 0) << "the key cache differs from store_kv's";
  EXPECT_EQ(value_diff, 0) << "the value cache differs from store_kv's";
  EXPECT_EQ(nonfinite, 0) << "unwritten or non-finite elements";
  EXPECT_EQ(touched, 0) << "elements of unmapped slots were written";
  EXPECT_LE(q_error, 1e-2);
  EXPECT_LE(k_error, 1e-2);
  EXPECT_LE(pool_error[0], 1e-2);
  EXPECT_EQ(pool_error[1], 0.0);
}

std::vector<FusedCase> fused_cases() {
  std::vector<FusedCase> cases;
  for (const int64_t tokens : {1, 7, 300}) {
    const std::string t = "_t" + std::to_string(tokens);
    cases.push_back(
        {.op = "add_rms_norm", .label = "qwen3_30b" + t, .tokens = tokens, .hidden = 2048});
    cases.push_back({.op = "add_rms_norm", .label = "tiny" + t, .tokens = tokens, .hidden = 64});
    cases.push_back({.op = "add_rms_norm", .label = "odd" + t, .tokens = tokens, .hidden = 77});
    cases.push_back({.op = "qk_norm_rope_store",
                     .label = "qwen3_30b" + t,
                     .tokens = tokens,
                     .heads = 32,
                     .kv_heads = 4,
                     .head_dim = 128});
    cases.push_back({.op = "qk_norm_rope_store",
                     .label = "head_dim_64" + t,
                     .tokens = tokens,
                     .heads = 16,
                     .kv_heads = 4,
                     .head_dim = 64});
    cases.push_back({.op = "qk_norm_rope_store",
                     .label = "tiny" + t,
                     .tokens = tokens,
                     .heads = 4,
                     .kv_heads = 2,
                     .head_dim = 16});
    cases.push_back({.op = "qk_norm_rope_store",
                     .label = "odd" + t,
                     .tokens = tokens,
                     .heads = 3,
                     .kv_heads = 1,
                     .head_dim = 18});
  }
  cases.push_back({.op = "add_rms_norm",
                   .label = "qwen3_30b_f32_weight",
                   .tokens = 7,
                   .hidden = 2048,
                   .weight = DType::kF32});
  cases.push_back({.op = "qk_norm_rope_store",
                   .label = "qwen3_30b_f32_weight",
                   .tokens = 7,
                   .heads = 32,
                   .kv_heads = 4,
                   .head_dim = 128,
                   .weight = DType::kF32});
  cases.push_back({.op = "qk_norm_rope_store",
                   .label = "head_dim_256",
                   .tokens = 5,
                   .heads = 8,
                   .kv_heads = 2,
                   .head_dim = 256});
  cases.push_back({.op = "qk_norm_rope_store",
                   .label = "head_dim_96",
                   .tokens = 5,
                   .heads = 6,
                   .kv_heads = 2,
                   .head_dim = 96});
  return cases;
}

class FusedOpTest : public testing::TestWithParam<FusedCase> {};

TEST_P(FusedOpTest, FusedMatchesChainBitwise) {
  const FusedCase& c = GetParam();
  Rng rng(std::hash<std::string>{}(c.op + "/" + c.label));
  Harness harness;
  if (c.op == "add_rms_norm") {
    run_add_rms_norm(harness, c, rng);
  } else {
    run_qk_norm_rope_store(harness, c, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(Fused, FusedOpTest, testing::ValuesIn(fused_cases()),
                         [](const testing::TestParamInfo<FusedCase>& param_info) {
                           return param_info.param.op + "_" + param_info.param.label;
                         });

}  // namespace
}  // namespace tidal
