// DeepSeek-V2/V3 config.json: MLA shapes, the latent KV cache layout, routing, YaRN (against the
// values transformers computed for the fixtures' references), both config styles, and the
// refusals of what tidal cannot serve.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "model/loader/loader_test_util.h"
#include "model/model_config.h"

namespace tidal {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

std::string fixture(const std::string& name) {
  return std::string(TIDAL_SOURCE_DIR) + "/tests/fixtures/" + name;
}

ModelConfig parse(const json& config) {
  return parse_model_config(config, "/m/config.json");
}

std::string parse_error(const json& config) {
  return testing_util::error_of([&] { parse(config); });
}

// The fixture's config in the published style and in transformers 5's, and what transformers
// reported for it (config_summary of the reference).
struct Fixture {
  json published;
  json transformers5;
  json summary;
};

Fixture load_fixture(const std::string& name) {
  return {read_json(fixture(name) + "/config.json"),
          read_json(fixture(name) + "/config.transformers5.json"),
          read_json(fixture(name) + ".reference.json")["config_summary"]};
}

void expect_rope_as_transformers(const ModelConfig& config, const json& summary) {
  const std::vector<float> expected = summary["rope_inv_freq"].get<std::vector<float>>();
  if (summary["rope_scaling"].is_null()) {
    EXPECT_TRUE(config.rope_inv_freq.empty());  // plain theta^(-2i/d), computed by the layer
  } else {
    ASSERT_EQ(config.rope_inv_freq.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_FLOAT_EQ(config.rope_inv_freq[i], expected[i]) << "inv_freq " << i;
    }
  }
  EXPECT_FLOAT_EQ(config.rope_attention_factor, summary["rope_attention_factor"].get<float>());
  EXPECT_FLOAT_EQ(config.attention_scale, summary["softmax_scale"].get<float>());
}

TEST(DeepseekConfig, V3FixtureInBothStyles) {
  const Fixture f = load_fixture("tiny-deepseek-v3");
  for (const json& style : {f.published, f.transformers5}) {
    const ModelConfig config = parse(style);
    EXPECT_EQ(config.architecture, "DeepseekV3ForCausalLM");
    EXPECT_EQ(config.mla.q_lora_rank, 24);
    EXPECT_EQ(config.mla.kv_lora_rank, 32);
    EXPECT_EQ(config.mla.qk_nope_head_dim, 16);
    EXPECT_EQ(config.mla.qk_rope_head_dim, 8);
    EXPECT_EQ(config.mla.v_head_dim, 12);
    // The cache keeps the latent and the rotary key, one of each per token and layer.
    EXPECT_EQ(config.kv_cache.key_heads, 1);
    EXPECT_EQ(config.kv_cache.key_dim, 32);
    EXPECT_EQ(config.kv_cache.value_heads, 1);
    EXPECT_EQ(config.kv_cache.value_dim, 8);
    EXPECT_EQ(config.num_experts, 16);
    EXPECT_EQ(config.num_experts_per_tok, 4);
    EXPECT_EQ(config.shared_expert_intermediate_size, 32);
    EXPECT_FALSE(config.shared_expert_gated);
    EXPECT_FALSE(config.is_moe_layer(0));  // first_k_dense_replace 1
    EXPECT_TRUE(config.is_moe_layer(1));
    EXPECT_EQ(config.intermediate_size, 128);
    EXPECT_TRUE(config.router.sigmoid);
    EXPECT_TRUE(config.router.selection_bias);
    EXPECT_TRUE(config.router.group_score_top2_sum);
    EXPECT_EQ(config.router.num_groups, 4);
    EXPECT_EQ(config.router.topk_groups, 2);
    EXPECT_FLOAT_EQ(config.router.routed_scaling_factor, 2.5f);
    EXPECT_TRUE(config.norm_topk_prob);
    expect_rope_as_transformers(config, f.summary);
  }
}

TEST(DeepseekConfig, V2LiteFixtureInBothStyles) {
  const Fixture f = load_fixture("tiny-deepseek-v2-lite");
  for (const json& style : {f.published, f.transformers5}) {
    const ModelConfig config = parse(style);
    EXPECT_EQ(config.architecture, "DeepseekV2ForCausalLM");
    EXPECT_EQ(config.mla.q_lora_rank, 0);  // q_lora_rank null: q_proj from the hidden state
    EXPECT_EQ(config.num_experts, 8);
    EXPECT_EQ(config.shared_expert_intermediate_size, 2 * 32);
    EXPECT_FALSE(config.router.sigmoid);
    EXPECT_FALSE(config.router.selection_bias);
    EXPECT_EQ(config.router.num_groups, 1);  // greedy
    EXPECT_FALSE(config.norm_topk_prob);
    expect_rope_as_transformers(config, f.summary);
  }
}

TEST(DeepseekConfig, PublishedV3Shapes) {
  const ModelConfig config =
      parse(read_json(std::string(TIDAL_SOURCE_DIR) + "/bench/configs/deepseek-v3.json"));
  EXPECT_EQ(config.num_layers, 61);
  EXPECT_EQ(config.router.num_groups, 8);
  EXPECT_EQ(config.router.topk_groups, 4);
  EXPECT_EQ(config.kv_cache.elements_per_token(), 512 + 64);
  EXPECT_EQ(config.mlp_only_layers, (std::vector<int64_t>{0, 1, 2}));
  // YaRN with mscale = mscale_all_dim: cos and sin unscaled, the softmax scale
  // (0.1 ln 40 + 1)^2 / sqrt(192).
  EXPECT_FLOAT_EQ(config.rope_attention_factor, 1.0f);
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  EXPECT_FLOAT_EQ(config.attention_scale, static_cast<float>(mscale * mscale / std::sqrt(192.0)));
  ASSERT_EQ(config.rope_inv_freq.size(), 32u);
  EXPECT_FLOAT_EQ(config.rope_inv_freq[0], 1.0f);    // fast dims keep their frequency
  EXPECT_FLOAT_EQ(config.rope_inv_freq[31] * 40.0f,  // slow dims are stretched 40 times
                  1.0f / std::pow(10000.0f, 62.0f / 64.0f));
}

json with(json config, const std::string& key, const json& value) {
  config[key] = value;
  return config;
}

TEST(DeepseekConfig, RefusesWhatItCannotServe) {
  const json v2 = read_json(fixture("tiny-deepseek-v2-lite") + "/config.json");
  const json v3 = read_json(fixture("tiny-deepseek-v3") + "/config.json");
  EXPECT_THAT(parse_error(with(v2, "norm_topk_prob", true)),
              AllOf(HasSubstr("'norm_topk_prob'"), HasSubstr("disagree")));
  EXPECT_THAT(parse_error(with(v3, "moe_layer_freq", 2)), HasSubstr("'moe_layer_freq'"));
  EXPECT_THAT(parse_error(with(v3, "topk_method", "greedy")), HasSubstr("noaux_tc"));
  EXPECT_THAT(parse_error(with(v2, "scoring_func", "sigmoid")), HasSubstr("'scoring_func'"));
  EXPECT_THAT(parse_error(with(v3, "n_group", 3)), HasSubstr("does not divide"));
  EXPECT_THAT(parse_error(with(v3, "topk_group", 5)), HasSubstr("exceeds n_group"));
  EXPECT_THAT(parse_error(with(v3, "attention_bias", true)), HasSubstr("'attention_bias'"));
  EXPECT_THAT(parse_error(with(v3, "qk_rope_head_dim", 7)), HasSubstr("must be even"));
  json no_latent = v3;
  no_latent.erase("kv_lora_rank");
  EXPECT_THAT(parse_error(no_latent), HasSubstr("'kv_lora_rank'"));
  const json t5 = read_json(fixture("tiny-deepseek-v3") + "/config.transformers5.json");
  EXPECT_THAT(parse_error(with(t5, "rope_interleave", false)), HasSubstr("'rope_interleave'"));
  json linear = v3;
  linear["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THAT(parse_error(linear), AllOf(HasSubstr("'rope_scaling'"), HasSubstr("'linear'")));
}

}  // namespace
}  // namespace tidal
