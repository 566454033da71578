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

}  // namespace
}  // namespace tidal
