// The benchmark's floors on the Qwen3-30B-A3B shapes, against counts made by hand.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "model/dummy_weights.h"
#include "model/roofline.h"

namespace tidal {
namespace {

ModelConfig qwen3_30b() {
  return load_dummy_config(
      {.config_file = std::string(TIDAL_SOURCE_DIR) + "/bench/configs/qwen3-30b-a3b.json"});
}

TEST(Roofline, AllExpertsTouchedReadsTheWholeModel) {
  const ModelConfig config = qwen3_30b();
  const std::vector<int64_t> all(48, 128);
  const StepBytes bytes = decode_step_bytes(config, 0, 1024, all, 2.0, 2.0);
  // 30,532,122,624 parameters, of which the embedding table (151936 x 2048) is read one row per
  // token, here none.
  EXPECT_DOUBLE_EQ((bytes.dense_weights + bytes.expert_weights) / 2.0,
                   30532122624.0 - 151936.0 * 2048.0);
  EXPECT_DOUBLE_EQ(bytes.kv_cache, 0.0);
}

TEST(Roofline, OneSequenceEightExpertsAContextOf1024) {
  const ModelConfig config = qwen3_30b();
  const std::vector<int64_t> eight(48, 8);
  const StepBytes bytes = decode_step_bytes(config, 1, 1024, eight, 2.0, 2.0);
  EXPECT_DOUBLE_EQ(bytes.expert_weights, 48.0 * 8 * 3 * 768 * 2048 * 2);
  EXPECT_DOUBLE_EQ(bytes.kv_cache, 1024.0 * 48 * 2 * 4 * 128 * 2);
  EXPECT_DOUBLE_EQ(bytes.total(), 6184402944.0);
}

TEST(Roofline, TouchedExpertsMustCoverEveryMoeLayer) {
  const ModelConfig config = qwen3_30b();
  const std::vector<int64_t> too_few(47, 8);
  EXPECT_THROW(decode_step_bytes(config, 1, 1024, too_few, 2.0, 2.0), Error);
}

TEST(Roofline, PrefillFlopsOf8kTokens) {
  const ModelConfig config = qwen3_30b();
  const PrefillFlops flops = prefill_flops(config, 8192);
  EXPECT_DOUBLE_EQ(flops.matmul, 44737203011584.0);
  EXPECT_DOUBLE_EQ(flops.attention, 26391500292096.0);
}

// DeepSeek-V3's shapes, cut to its 3 dense layers and one MoE layer: latent attention's weights
// (187,107,328 per layer, counted by hand from the published shapes) and its cache of 512 + 64
// elements per token and layer, against 128 heads x (192 + 128) for multi-head attention.
TEST(Roofline, DeepseekV3LatentAttention) {
  const ModelConfig config = load_dummy_config(
      {.config_file = std::string(TIDAL_SOURCE_DIR) + "/bench/configs/deepseek-v3.json",
       .num_layers = 4});
  const std::vector<int64_t> touched = {8};
  const StepBytes bytes = decode_step_bytes(config, 1, 1024, touched, 2.0, 2.0);
  const double hidden = 7168;
  const double attention = 1536.0 * 7168 + 1536 + 128.0 * 192 * 1536 + 576.0 * 7168 + 512 +
                           128.0 * 256 * 512 + 7168.0 * 128 * 128;
  EXPECT_DOUBLE_EQ(attention, 187107328.0);
  const double dense = hidden                                // one embedding row
                       + 4 * (2 * hidden + attention)        // norms and attention
                       + 3 * (3 * 18432.0 * hidden)          // the dense MLPs
                       + 256 * hidden + 3 * 2048.0 * hidden  // router, shared expert
                       + hidden + 129280.0 * hidden;         // final norm, lm_head
  EXPECT_DOUBLE_EQ(bytes.dense_weights / 2.0, dense);
  EXPECT_DOUBLE_EQ(bytes.expert_weights / 2.0, 8 * 3 * 2048.0 * hidden);
  EXPECT_DOUBLE_EQ(bytes.kv_cache, 1024.0 * 4 * 576 * 2);
  EXPECT_DOUBLE_EQ(kv_cache_bytes_per_token(config, 2.0), 4.0 * 576 * 2);
  EXPECT_DOUBLE_EQ(multi_head_kv_cache_bytes_per_token(config, 2.0), 4.0 * 128 * 320 * 2);
}

}  // namespace
}  // namespace tidal
