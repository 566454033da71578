// Dummy weights on the CPU backend: the shapes of a config, values that keep a forward pass
// finite, the same values for the same seed (and for an expert in any slot), and clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/workspace.h"
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

}  // namespace
}  // namespace tidal
