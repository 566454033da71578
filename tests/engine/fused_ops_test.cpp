// The fused ops on the CPU backend (the reference the GPU op test compares with) give exactly the
// bits of the chains they replace: add_rms_norm == add then rms_norm, qk_norm_rope_store ==
// rms_norm of q and k per head, rope, store_kv. The model's greedy tokens depend on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"

namespace tidal {
namespace {

class FusedOpsTest : public ::testing::Test {
 protected:
  // Uniform values in [-scale, scale] + offset, rounded to bf16 when the tensor is BF16.
  Tensor random_tensor(std::vector<int64_t> shape, float scale, DType dtype = DType::kF32,
                       float offset = 0.0f) {
    Tensor tensor{.dtype = dtype, .shape = std::move(shape)};
    std::uniform_real_distribution<float> uniform(-scale, scale);
    std::vector<std::byte>& bytes = storage_.emplace_back(tensor.num_bytes());
    for (int64_t i = 0; i < tensor.num_elements(); ++i) {
      const float value = offset + uniform(rng_);
      if (dtype == DType::kBF16) {
        const uint16_t bits = f32_to_bf16(value);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
      } else {
        std::memcpy(bytes.data() + 4 * i, &value, 4);
      }
    }
    tensor.data = bytes.data();
    return tensor;
  }
  // Filled with 0xff bytes (NaN): an element either path leaves alone stays NaN in both.
  Tensor poisoned(std::vector<int64_t> shape, DType dtype = DType::kF32) {
    Tensor tensor{.dtype = dtype, .shape = std::move(shape)};
    tensor.data = storage_.emplace_back(tensor.num_bytes(), std::byte{0xff}).data();
    return tensor;
  }
  Tensor copy(const Tensor& tensor) {
    Tensor result = tensor;
    std::vector<std::byte>& bytes = storage_.emplace_back(tensor.num_bytes());
    std::memcpy(bytes.data(), tensor.data, bytes.size());
    result.data = bytes.data();
    return result;
  }
  Tensor i32(const std::vector<int32_t>& values) {
    Tensor tensor{.dtype = DType::kI32, .shape = {static_cast<int64_t>(values.size())}};
    tensor.data = storage_.emplace_back(values.size() * 4).data();
    std::memcpy(tensor.data, values.data(), values.size() * 4);
    return tensor;
  }
  static bool same_bytes(const Tensor& a, const Tensor& b) {
    return a.num_bytes() == b.num_bytes() && std::memcmp(a.data, b.data, a.num_bytes()) == 0;
  }

  std::unique_ptr<Backend> backend_ = make_backend("cpu");
  std::mt19937 rng_{20240611};
  std::deque<std::vector<std::byte>> storage_;  // a deque: tensors point into its elements
};

TEST_F(FusedOpsTest, AddRmsNormIsAddThenRmsNorm) {
  for (const int64_t tokens : {1, 7, 300}) {
    for (const int64_t hidden : {64, 77, 2048}) {
      for (const DType weight_dtype : {DType::kBF16, DType::kF32}) {
        SCOPED_TRACE("tokens " + std::to_string(tokens) + " hidden " + std::to_string(hidden) +
                     " weight " + std::string(dtype_name(weight_dtype)));
        const Tensor residual = random_tensor({tokens, hidden}, 4.0f);
        const Tensor x = random_tensor({tokens, hidden}, 4.0f);
        const Tensor weight = random_tensor({hidden}, 0.5f, weight_dtype, 1.0f);
        const Tensor chain_residual = copy(residual);
        const Tensor chain_out = poisoned({tokens, hidden});
        backend_->add(chain_residual, x, chain_residual);
        backend_->rms_norm(chain_residual, weight, 1e-6f, chain_out);
        const Tensor fused_out = poisoned({tokens, hidden});
        backend_->add_rms_norm(residual, x, weight, 1e-6f, fused_out);
        EXPECT_TRUE(same_bytes(residual, chain_residual));
        EXPECT_TRUE(same_bytes(fused_out, chain_out));
      }
    }
  }
}

TEST_F(FusedOpsTest, AddRmsNormRefusesAnOutputOverTheResidual) {
  const Tensor residual = random_tensor({2, 8}, 1.0f);
  const Tensor weight = random_tensor({8}, 0.5f, DType::kBF16, 1.0f);
  EXPECT_THROW(
      backend_->add_rms_norm(residual, random_tensor({2, 8}, 1.0f), weight, 1e-6f, residual),
      Error);
}

struct HeadShape {
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

TEST_F(FusedOpsTest, QkNormRopeStoreIsNormsRopeStore) {
  // Qwen3-30B-A3B, a head_dim of 64, the tiny fixture's, and an odd one.
  for (const HeadShape shape :
       {HeadShape{32, 4, 128}, HeadShape{16, 4, 64}, HeadShape{4, 2, 16}, HeadShape{3, 1, 18}}) {
    for (const int64_t tokens : {1, 7, 300}) {
      SCOPED_TRACE("tokens " + std::to_string(tokens) + " heads " + std::to_string(shape.heads) +
                   "/" + std::to_string(shape.kv_heads) + " head_dim " +
                   std::to_string(shape.head_dim));
      const int64_t block_size = 16;
      const int64_t num_blocks = tokens / block_size + 3;
      std::vector<int32_t> slots(static_cast<size_t>(num_blocks * block_size));
      for (size_t i = 0; i < slots.size(); ++i) slots[i] = static_cast<int32_t>(i);
      std::shuffle(slots.begin(), slots.end(), rng_);
      slots.resize(static_cast<size_t>(tokens));
      for (size_t t = 0; t < slots.size(); ++t) {
        if (t % 5 == 2) slots[t] = -1;  // padding: not stored
      }
      std::vector<int32_t> positions(static_cast<size_t>(tokens));
      std::uniform_int_distribution<int32_t> position(0, 40000);
      for (int32_t& p : positions) p = position(rng_);
      const Tensor slot_mapping = i32(slots);
      const Tensor position_ids = i32(positions);
      const Tensor q = random_tensor({tokens, shape.heads, shape.head_dim}, 3.0f);
      const Tensor k = random_tensor({tokens, shape.kv_heads, shape.head_dim}, 3.0f);
      const Tensor v = random_tensor({tokens, shape.kv_heads, shape.head_dim}, 3.0f);
      const Tensor q_norm = random_tensor({shape.head_dim}, 0.5f, DType::kBF16, 1.0f);
      const Tensor k_norm = random_tensor({shape.head_dim}, 0.5f, DType::kBF16, 1.0f);
      const std::vector<int64_t> pool = {num_blocks, block_size, shape.kv_heads, shape.head_dim};
      const double theta = 1e6;
      const float eps = 1e-6f;

      const Tensor chain_q = copy(q);
      const Tensor chain_k = copy(k);
      const KvCacheLayer chain_cache{.key = poisoned(pool), .value = poisoned(pool)};
      backend_->rms_norm(chain_q, q_norm, eps, chain_q);
      backend_->rms_norm(chain_k, k_norm, eps, chain_k);
      backend_->rope(chain_q, chain_k, position_ids, theta);
      backend_->store_kv(chain_k, v, slot_mapping, chain_cache);

      const KvCacheLayer cache{.key = poisoned(pool), .value = poisoned(pool)};
      backend_->qk_norm_rope_store(q, k, v, q_norm, k_norm, eps, position_ids, theta, slot_mapping,
                                   cache);
      EXPECT_TRUE(same_bytes(q, chain_q));
      EXPECT_TRUE(same_bytes(k, chain_k));
      EXPECT_TRUE(same_bytes(cache.key, chain_cache.key));
      EXPECT_TRUE(same_bytes(cache.value, chain_cache.value));
    }
  }
}

}  // namespace
}  // namespace tidal
