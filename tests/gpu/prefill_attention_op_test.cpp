// Prefill attention on the CUDA backend (the tensor-core tiles of flash_attention.cu) against the
// CPU reference at the sizes op_test.cpp's table leaves out: prompts of over a thousand tokens,
// chunks at the end of a long context, batches of sequences of unequal lengths, grouped-query
// heads, and queries that see no key. Cache slots no sequence owns (the spare blocks and the tail
// of each sequence's last block) hold NaN, as do the outputs before the call, so a tile that
// reads past a sequence or a row left unwritten fails. Same bound as op_test.cpp: max |cuda -
// cpu| / max |cpu| <= 8e-3 (a bf16 output of an f32 online softmax).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"

namespace tidal {
namespace {

constexpr double kBound = 8e-3;

struct PrefillCase {
  std::string label;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 16;
  std::vector<std::pair<int64_t, int64_t>> seqs;  // (new tokens, context length)
};

Backend& cuda_backend() {
  static const std::unique_ptr<Backend> backend = make_backend("cuda");
  return *backend;
}

// Host values and their device copy; the device keeps bf16, the CPU reference f32 (the same
// values: every one is bf16-representable).
class Buffers {
 public:
  Tensor host_f32(std::vector<float> values, std::vector<int64_t> shape) {
    host_f32_.push_back(std::move(values));
    return {.data = host_f32_.back().data(), .dtype = DType::kF32, .shape = std::move(shape)};
  }
  Tensor host_i32(std::vector<int32_t> values, std::vector<int64_t> shape) {
    host_i32_.push_back(std::move(values));
    return {.data = host_i32_.back().data(), .dtype = DType::kI32, .shape = std::move(shape)};
  }
  Tensor device_bf16(const std::vector<float>& values, std::vector<int64_t> shape) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
    return upload(bits.data(), bits.size() * sizeof(uint16_t), std::move(shape), DType::kBF16);
  }
  Tensor device_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
    return upload(values.data(), values.size() * sizeof(int32_t), std::move(shape), DType::kI32);
  }
  std::vector<float> read_bf16(const Tensor& tensor) {
    std::vector<uint16_t> bits(static_cast<size_t>(tensor.num_elements()));
    cuda_backend().copy_to_host(bits.data(), tensor.data, bits.size() * sizeof(uint16_t));
    std::vector<float> values(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_to_f32(bits[i]);
    return values;
  }

 private:
  Tensor upload(const void* bytes, size_t size, std::vector<int64_t> shape, DType dtype) {
    device_.push_back(cuda_backend().allocate(std::max<size_t>(size, 1)));
    cuda_backend().copy_from_host(device_.back().data(), bytes, size);
    return {.data = device_.back().data(),
            .dtype = dtype,
            .shape = std::move(shape),
            .device = DeviceKind::kCuda};
  }

  std::vector<std::vector<float>> host_f32_;
  std::vector<std::vector<int32_t>> host_i32_;
  std::vector<DeviceBuffer> device_;
};

class PrefillAttentionTest : public testing::TestWithParam<PrefillCase> {};

TEST_P(PrefillAttentionTest, CudaMatchesCpu) {
  const PrefillCase& c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(c.label)));
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  const auto random_bf16 = [&] { return bf16_to_f32(f32_to_bf16(uniform(rng))); };
  const float nan = std::numeric_limits<float>::quiet_NaN();

  const auto num_seqs = static_cast<int64_t>(c.seqs.size());
  int64_t tokens = 0;
  int64_t num_blocks = 2;  // spares no sequence owns
  int64_t max_blocks = 1;
  int64_t max_query_len = 0;
  for (const auto& [queries, context] : c.seqs) {
    const int64_t blocks = (context + c.block_size - 1) / c.block_size;
    tokens += queries;
    num_blocks += blocks;
    max_blocks = std::max(max_blocks, blocks);
    max_query_len = std::max(max_query_len, queries);
  }
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  const int64_t width = c.kv_heads * c.head_dim;
  const int64_t pool_count = num_blocks * c.block_size * width;
  std::vector<float> keys(static_cast<size_t>(pool_count), nan);
  std::vector<float> values(static_cast<size_t>(pool_count), nan);
  std::vector<int32_t> query_start{0};
  std::vector<int32_t> context_lens;
  std::vector<int32_t> tables;
  size_t next = 0;
  for (const auto& [queries, context] : c.seqs) {
    query_start.push_back(query_start.back() + static_cast<int32_t>(queries));
    context_lens.push_back(static_cast<int32_t>(context));
    const int64_t blocks = (context + c.block_size - 1) / c.block_size;
    const size_t row = tables.size();
    for (int64_t b = 0; b < max_blocks; ++b) tables.push_back(b < blocks ? pool[next++] : 0);
    for (int64_t j = 0; j < context; ++j) {
      const int64_t slot = tables[row + j / c.block_size] * c.block_size + j % c.block_size;
      for (int64_t e = 0; e < width; ++e) {
        keys[static_cast<size_t>(slot * width + e)] = random_bf16();
        values[static_cast<size_t>(slot * width + e)] = random_bf16();
      }
    }
  }
  std::vector<float> q(static_cast<size_t>(tokens * c.heads * c.head_dim));
  for (float& value : q) value = random_bf16();
  const std::vector<int64_t> q_shape = {tokens, c.heads, c.head_dim};
  const std::vector<int64_t> pool_shape = {num_blocks, c.block_size, c.kv_heads, c.head_dim};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  Buffers buffers;
  CpuBackend cpu;
  const std::vector<float> poison(q.size(), nan);
  const Tensor cpu_out = buffers.host_f32(poison, q_shape);
  cpu.paged_attention(
      buffers.host_f32(q, q_shape),
      {.key = buffers.host_f32(keys, pool_shape), .value = buffers.host_f32(values, pool_shape)},
      {.query_start = buffers.host_i32(query_start, {num_seqs + 1}),
       .context_lens = buffers.host_i32(context_lens, {num_seqs}),
       .block_tables = buffers.host_i32(tables, {num_seqs, max_blocks}),
       .num_seqs = num_seqs,
       .max_query_len = max_query_len},
      scale, cpu_out);
  const Tensor gpu_out = buffers.device_bf16(poison, q_shape);
  cuda_backend().paged_attention(
      buffers.device_bf16(q, q_shape),
      {.key = buffers.device_bf16(keys, pool_shape),
       .value = buffers.device_bf16(values, pool_shape)},
      {.query_start = buffers.device_i32(query_start, {num_seqs + 1}),
       .context_lens = buffers.device_i32(context_lens, {num_seqs}),
       .block_tables = buffers.device_i32(tables, {num_seqs, max_blocks}),
       .num_seqs = num_seqs,
       .max_query_len = max_query_len},
      scale, gpu_out);

  const std::vector<float> got = buffers.read_bf16(gpu_out);
  const float* want = cpu_out.as<float>();
  int64_t nonfinite = 0;
  double max_diff = 0;
  double max_ref = 0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) {
      ++nonfinite;
      continue;
    }
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (diff > max_diff) {
      max_diff = diff;
      worst = i;
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  const double normalized = max_ref > 0 ? max_diff / max_ref : max_diff;
  std::printf("[op] %-16s %-44s %-8s error %.3g (bound %.3g, %zu values)\n", "prefill_attn",
              c.label.c_str(), "out", normalized, kBound, got.size());
  EXPECT_EQ(nonfinite, 0) << "unwritten, overflowed or NaN-read elements";
  EXPECT_LE(normalized, kBound) << "worst element " << worst << " cuda " << got[worst] << " cpu "
                                << want[worst];
}

// Qwen3-30B-A3B attention: 32 query heads over 4 KV heads of 128 (or fewer heads of the same
// group of 8, to keep the CPU reference quick). flash_attention.cu takes 128-query blocks when
// there are 512 or more of them (heads x sequences x 128-query tiles), 64-query blocks otherwise:
// the mixed batch and the wide head_dim 64 case run the former, the rest the latter.
std::vector<PrefillCase> prefill_cases() {
  return {
      {.label = "long_prefill_1500_group_8",
       .heads = 16,
       .kv_heads = 2,
       .head_dim = 128,
       .seqs = {{1500, 1500}}},
      {.label = "chunks_at_the_end_of_long_contexts",
       .heads = 8,
       .kv_heads = 1,
       .head_dim = 128,
       .seqs = {{700, 2000}, {130, 4000}, {16, 16}}},
      {.label = "qwen3_30b_mixed_lengths_batch",
       .heads = 32,
       .kv_heads = 4,
       .head_dim = 128,
       .seqs = {{1100, 1100}, {17, 17}, {200, 900}, {129, 129}, {64, 1000}, {1, 50}}},
      {.label = "head_dim_64_group_4_block_5",
       .heads = 8,
       .kv_heads = 2,
       .head_dim = 64,
       .block_size = 5,
       .seqs = {{300, 300}, {90, 400}}},
      // Enough query tiles for the 128-query blocks (the others take 64-query blocks).
      {.label = "head_dim_64_group_4_wide_blocks",
       .heads = 32,
       .kv_heads = 8,
       .head_dim = 64,
       .seqs = {{1000, 1000}, {300, 1100}}},
      {.label = "head_dim_80_group_3_block_7",
       .heads = 6,
       .kv_heads = 2,
       .head_dim = 80,
       .block_size = 7,
       .seqs = {{600, 650}, {33, 33}}},
      {.label = "tiny_head_dim_16_long",
       .heads = 4,
       .kv_heads = 2,
       .head_dim = 16,
       .seqs = {{1030, 1030}, {9, 9}}},
      // Query i of a chunk sits at context - queries + i: with fewer keys than queries the first
      // rows see none and are zeros.
      {.label = "fewer_keys_than_queries",
       .heads = 8,
       .kv_heads = 2,
       .head_dim = 128,
       .seqs = {{40, 10}, {33, 33}, {20, 0}}},
  };
}

INSTANTIATE_TEST_SUITE_P(Prefill, PrefillAttentionTest, testing::ValuesIn(prefill_cases()),
                         [](const testing::TestParamInfo<PrefillCase>& param_info) {
                           return param_info.param.label;
                         });

}  // namespace
}  // namespace tidal
