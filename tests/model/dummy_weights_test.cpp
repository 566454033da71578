// Dummy weights on the CPU backend: the shapes of a config, values that keep a forward pass
// finite, the same values for the same seed (and for an expert in any slot), and clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/workspace.h"
#include "common/mapped_file.h"
#include "engine/kv_cache.h"
#include "model/layers/feed_forward.h"
#include "model/load_model.h"
#include "model/synthetic_batch.h"

namespace tidal {
namespace {

std::string fixture_config() {
  return std::string(TIDAL_SOURCE_DIR) + "/tests/fixtures/tiny-qwen3-moe/config.json";
}
std::string qwen3_30b_config() {
  return std::string(TIDAL_SOURCE_DIR) + "/bench/configs/qwen3-30b-a3b.json";
}

// The logits of a 2-sequence prefill of 5 tokens, then of one decode step of both.
std::vector<float> prefill_then_decode(Backend& backend, CausalLm& model) {
  const ModelConfig& config = model.config();
  const SyntheticBatchSpec prefill{.num_seqs = 2,
                                   .new_tokens = 5,
                                   .cached_tokens = 0,
                                   .block_size = 4,
                                   .vocab_size = config.vocab_size,
                                   .seed = 7};
  SyntheticBatchSpec decode = prefill;
  decode.new_tokens = 1;
  decode.cached_tokens = 5;
  decode.seed = 8;
  KvCache cache(backend, config, decode.num_blocks(), decode.block_size);
  Workspace workspace(backend);
  std::vector<float> logits;
  for (const SyntheticBatchSpec& spec : {prefill, decode}) {
    // Both steps lay sequences out alike: blocks_per_seq is 2 for 5 and for 6 tokens of 4.
    EXPECT_EQ(spec.blocks_per_seq(), 2);
    const SyntheticBatch batch(backend, spec);
    workspace.begin_step();
    const Tensor out = model.forward(batch.batch(), cache.layers(), workspace);
    EXPECT_EQ(out.dim(0), 2);
    EXPECT_EQ(out.dim(1), config.vocab_size);
    const float* values = out.as<float>();
    logits.insert(logits.end(), values, values + out.num_elements());
  }
  return logits;
}

TEST(DummyWeights, FixtureShapesRunAFiniteForward) {
  const auto backend = make_backend("cpu");
  const auto model = load_dummy_model({.config_file = fixture_config(), .seed = 1}, *backend);
  EXPECT_EQ(model->config().num_layers, 4);
  const std::vector<float> logits = prefill_then_decode(*backend, *model);
  ASSERT_FALSE(logits.empty());
  for (const float value : logits) ASSERT_TRUE(std::isfinite(value));
  const auto [low, high] = std::minmax_element(logits.begin(), logits.end());
  EXPECT_GT(*high - *low, 1e-3f) << "logits are all alike: the weights did not reach them";
}

TEST(DummyWeights, SameSeedSameLogitsOtherSeedOtherLogits) {
  const auto backend = make_backend("cpu");
  const auto first = load_dummy_model({.config_file = fixture_config(), .seed = 1}, *backend);
  const auto again = load_dummy_model({.config_file = fixture_config(), .seed = 1}, *backend);
  const auto other = load_dummy_model({.config_file = fixture_config(), .seed = 2}, *backend);
  const std::vector<float> logits = prefill_then_decode(*backend, *first);
  EXPECT_EQ(logits, prefill_then_decode(*backend, *again));
  EXPECT_NE(logits, prefill_then_decode(*backend, *other));
}

// Expert parallelism puts any logical expert in any slot of any rank: the slot must hold the
// values the expert has in the full tensor.
TEST(DummyWeights, AnExpertHasTheSameWeightsInAnySlot) {
  const auto backend = make_backend("cpu");
  const ModelConfig config = load_dummy_config({.config_file = fixture_config()});
  WeightStore all(*backend, dummy_checkpoint(config, 3));
  WeightStore some(*backend, dummy_checkpoint(config, 3));
  const std::string prefix = "model.layers.1.mlp.";
  const MoeWeights full =
      MoeWeights::load(all, config, prefix, MoeWeightNames{}, {0, 1, 2, 3, 4, 5, 6, 7});
  const MoeWeights placed = MoeWeights::load(some, config, prefix, MoeWeightNames{}, {5, 2});
  for (const auto& [full_tensor, placed_tensor] :
       {std::pair{full.experts.gate_up, placed.experts.gate_up},
        std::pair{full.experts.down, placed.experts.down}}) {
    const size_t per_expert = full_tensor.num_bytes() / 8;
    const auto* whole = static_cast<const std::byte*>(full_tensor.data);
    const auto* slots = static_cast<const std::byte*>(placed_tensor.data);
    EXPECT_EQ(std::memcmp(slots, whole + 5 * per_expert, per_expert), 0);
    EXPECT_EQ(std::memcmp(slots + per_expert, whole + 2 * per_expert, per_expert), 0);
    EXPECT_NE(std::memcmp(slots, slots + per_expert, per_expert), 0);
  }
}

TEST(DummyWeights, NormsNearOneOtherWeightsSmall) {
  const auto backend = make_backend("cpu");
  const ModelConfig config = load_dummy_config({.config_file = fixture_config()});
  WeightStore store(*backend, dummy_checkpoint(config, 4));
  const auto values = [](const Tensor& tensor) {
    std::vector<float> out(static_cast<size_t>(tensor.num_elements()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(tensor.as<uint16_t>()[i]);
    return out;
  };
  const std::vector<float> norm =
      values(store.get("model.layers.2.input_layernorm.weight", {config.hidden_size}));
  for (const float value : norm) EXPECT_TRUE(value >= 0.9375f && value <= 1.0625f) << value;
  const std::vector<float> q =
      values(store.get("model.layers.2.self_attn.q_proj.weight",
                       {config.num_heads * config.head_dim, config.hidden_size}));
  for (const float value : q) EXPECT_TRUE(value >= -0.03125f && value <= 0.03125f) << value;
  const auto [low, high] = std::minmax_element(q.begin(), q.end());
  EXPECT_LT(*low, -0.03f);
  EXPECT_GT(*high, 0.03f);
}

TEST(DummyWeights, FewerLayersAndTheBenchConfig) {
  const ModelConfig cut = load_dummy_config({.config_file = qwen3_30b_config(), .num_layers = 2});
  EXPECT_EQ(cut.num_layers, 2);
  EXPECT_EQ(cut.hidden_size, 2048);
  EXPECT_EQ(cut.num_experts, 128);
  EXPECT_EQ(cut.num_experts_per_tok, 8);
  EXPECT_EQ(cut.moe_intermediate_size, 768);
  EXPECT_EQ(cut.num_heads, 32);
  EXPECT_EQ(cut.num_kv_heads, 4);
  EXPECT_EQ(cut.head_dim, 128);
  EXPECT_EQ(cut.vocab_size, 151936);
  EXPECT_EQ(load_dummy_config({.config_file = qwen3_30b_config()}).num_layers, 48);
  // The synthetic checkpoint names every tensor, with the right shapes, and holds no bytes.
  const Checkpoint checkpoint = dummy_checkpoint(cut, 0);
  EXPECT_TRUE(checkpoint.is_synthetic());
  EXPECT_EQ(
      checkpoint.tensor("model.layers.1.mlp.experts.gate_up_proj", {128, 1536, 2048}).data.size(),
      size_t{128} * 1536 * 2048 * 2);
  EXPECT_FALSE(checkpoint.has("model.layers.2.input_layernorm.weight"));
}

TEST(DummyWeights, ErrorsNameTheFileAndTheProblem) {
  try {
    load_dummy_config({.config_file = fixture_config(), .num_layers = 9});
    FAIL() << "9 layers of a 4-layer config were accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("--num-layers 9 outside [1, 4]"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(load_dummy_config({.config_file = "/nonexistent/config.json"}), Error);
  EXPECT_THROW(load_dummy_config({}), Error);
}

// The tiny fixture's config with an FP8 quantization_config (blocks of [16, 24]), in a file.
std::string fp8_fixture_config() {
  nlohmann::json config = nlohmann::json::parse(read_text_file(fixture_config()));
  config["quantization_config"] = {
      {"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {16, 24}}};
  const std::string path = ::testing::TempDir() + "tidal_dummy_fp8_config.json";
  std::ofstream(path) << config.dump();
  return path;
}

// --load-format dummy with an FP8 config: projections and experts are F8_E4M3 with block scales
// (as the checkpoints store them), dequantizing to the range of the bf16 dummy weights; a
// forward stays finite, and an expert has the same values and scales in any slot.
TEST(DummyWeights, Fp8ConfigMakesFp8WeightsWithScales) {
  const auto backend = make_backend("cpu");
  const auto model = load_dummy_model({.config_file = fp8_fixture_config(), .seed = 1}, *backend);
  const std::vector<float> logits = prefill_then_decode(*backend, *model);
  for (const float value : logits) ASSERT_TRUE(std::isfinite(value));
  const auto [low, high] = std::minmax_element(logits.begin(), logits.end());
  EXPECT_GT(*high - *low, 1e-3f) << "logits are all alike: the weights did not reach them";

  const ModelConfig config = load_dummy_config({.config_file = fp8_fixture_config()});
  ASSERT_TRUE(config.fp8.has_value());
  WeightStore store(*backend, dummy_checkpoint(config, 4), config.fp8);
  const Tensor q = store.get("model.layers.2.self_attn.q_proj.weight",
                             {config.num_heads * config.head_dim, config.hidden_size});
  ASSERT_EQ(q.dtype, DType::kF8E4M3);
  ASSERT_NE(q.scales.data, nullptr);
  float largest = 0;
  for (int64_t r = 0; r < q.dim(0); ++r) {
    for (int64_t c = 0; c < q.dim(1); ++c) {
      const float value =
          fp8_e4m3_to_f32(q.as<uint8_t>()[r * q.dim(1) + c]) *
          q.scales.data[q.scales.row_block(r) * q.scales.col_blocks(q.dim(1)) + c / 24];
      largest = std::max(largest, std::abs(value));
    }
  }
  EXPECT_LE(largest, 0.03125f);
  EXPECT_GT(largest, 0.02f);

  WeightStore all(*backend, dummy_checkpoint(config, 3), config.fp8);
  WeightStore some(*backend, dummy_checkpoint(config, 3), config.fp8);
  const std::string prefix = "model.layers.1.mlp.";
  const MoeWeights full =
      MoeWeights::load(all, config, prefix, MoeWeightNames{}, {0, 1, 2, 3, 4, 5, 6, 7});
  const MoeWeights placed = MoeWeights::load(some, config, prefix, MoeWeightNames{}, {5, 2});
  const std::vector<ExpertSlots::Region> whole = full.experts.regions();
  const std::vector<ExpertSlots::Region> slots = placed.experts.regions();
  ASSERT_EQ(whole.size(), 4u);  // gate_up, its scales, down, its scales
  ASSERT_EQ(slots.size(), 4u);
  for (size_t i = 0; i < whole.size(); ++i) {
    const size_t bytes = whole[i].slot_bytes;
    ASSERT_EQ(slots[i].slot_bytes, bytes);
    EXPECT_EQ(std::memcmp(slots[i].base, whole[i].base + 5 * bytes, bytes), 0) << i;
    EXPECT_EQ(std::memcmp(slots[i].base + bytes, whole[i].base + 2 * bytes, bytes), 0) << i;
  }
}

}  // namespace
}  // namespace tidal
