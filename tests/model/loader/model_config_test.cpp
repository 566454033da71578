// config.json parsing in both transformers styles, its validation errors, and the eos merge.
#include "model/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "model/loader/loader_test_util.h"

namespace tidal {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using json = nlohmann::json;

// Written by transformers 5.24 save_pretrained for a tiny Qwen3-MoE.
constexpr const char* kConfigV5 =
    R"({"architectures":["Qwen3MoeForCausalLM"],"attention_bias":false,
"attention_dropout":0.0,"bos_token_id":null,"decoder_sparse_step":1,"dtype":"float32",
"eos_token_id":null,"head_dim":8,"hidden_act":"silu","hidden_size":32,"initializer_range":0.02,
"intermediate_size":64,"max_position_embeddings":32768,"mlp_only_layers":[0],
"model_type":"qwen3_moe","moe_intermediate_size":16,"norm_topk_prob":false,
"num_attention_heads":4,"num_experts_per_tok":2,"num_hidden_layers":2,"num_key_value_heads":2,
"num_local_experts":4,"output_router_logits":false,"pad_token_id":null,"rms_norm_eps":1e-06,
"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"router_aux_loss_coef":0.001,
"sliding_window":null,"tie_word_embeddings":false,"transformers_version":"5.24.0",
"use_cache":true,"use_sliding_window":false,"vocab_size":300})";

// The same model as transformers 4.x wrote it.
constexpr const char* kConfigV4 =
    R"({"architectures":["Qwen3MoeForCausalLM"],"attention_bias":false,
"attention_dropout":0.0,"decoder_sparse_step":1,"head_dim":8,"hidden_act":"silu",
"hidden_size":32,"initializer_range":0.02,"intermediate_size":64,"max_position_embeddings":32768,
"max_window_layers":2,"mlp_only_layers":[0],"model_type":"qwen3_moe","moe_intermediate_size":16,
"norm_topk_prob":false,"num_attention_heads":4,"num_experts":4,"num_experts_per_tok":2,
"num_hidden_layers":2,"num_key_value_heads":2,"output_router_logits":false,"rms_norm_eps":1e-06,
"rope_scaling":null,"rope_theta":10000.0,"router_aux_loss_coef":0.001,"sliding_window":null,
"tie_word_embeddings":false,"torch_dtype":"float32","transformers_version":"4.51.0",
"use_cache":true,"use_sliding_window":false,"vocab_size":300})";

// Qwen/Qwen3-30B-A3B config.json as published.
constexpr const char* kQwen3_30B_A3B = R"({"architectures":["Qwen3MoeForCausalLM"],
"attention_bias":false,"attention_dropout":0.0,"bos_token_id":151643,"decoder_sparse_step":1,
"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":2048,
"initializer_range":0.02,"intermediate_size":6144,"max_position_embeddings":40960,
"max_window_layers":48,"mlp_only_layers":[],"model_type":"qwen3_moe","moe_intermediate_size":768,
"norm_topk_prob":true,"num_attention_heads":32,"num_experts":128,"num_experts_per_tok":8,
"num_hidden_layers":48,"num_key_value_heads":4,"output_router_logits":false,"rms_norm_eps":1e-06,
"rope_scaling":null,"rope_theta":1000000.0,"router_aux_loss_coef":0.001,"sliding_window":null,
"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.51.0",
"use_cache":true,"use_sliding_window":false,"vocab_size":151936})";

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.moe_intermediate_size, b.moe_intermediate_size);
  EXPECT_EQ(a.num_experts, b.num_experts);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.norm_topk_prob, b.norm_topk_prob);
  EXPECT_EQ(a.mlp_only_layers, b.mlp_only_layers);
  EXPECT_EQ(a.decoder_sparse_step, b.decoder_sparse_step);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
}

// kConfigV5 with `key` replaced (or removed, when `value` is discarded).
json v5_with(const std::string& key, const json& value) {
  json config = json::parse(kConfigV5);
  if (value.is_discarded()) {
    config.erase(key);
  } else {
    config[key] = value;
  }
  return config;
}

std::string parse_error(const json& config) {
  return testing_util::error_of([&] { parse_model_config(config, "/m/config.json"); });
}

const json kRemove = json(json::value_t::discarded);

TEST(ModelConfigTest, TransformersV5StyleParses) {
  const ModelConfig config = parse_model_config(json::parse(kConfigV5), "v5");
  EXPECT_EQ(config.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(config.model_type, "qwen3_moe");
  EXPECT_EQ(config.vocab_size, 300);
  EXPECT_EQ(config.hidden_size, 32);
  EXPECT_EQ(config.num_layers, 2);
  EXPECT_EQ(config.num_heads, 4);
  EXPECT_EQ(config.num_kv_heads, 2);
  EXPECT_EQ(config.head_dim, 8);
  EXPECT_EQ(config.intermediate_size, 64);
  EXPECT_EQ(config.moe_intermediate_size, 16);
  EXPECT_EQ(config.num_experts, 4);
  EXPECT_EQ(config.num_experts_per_tok, 2);
  EXPECT_FALSE(config.norm_topk_prob);
  EXPECT_THAT(config.mlp_only_layers, ElementsAre(0));
  EXPECT_EQ(config.decoder_sparse_step, 1);
  EXPECT_FLOAT_EQ(config.rms_norm_eps, 1e-6f);
  EXPECT_EQ(config.rope_theta, 10000.0);
  EXPECT_EQ(config.max_position_embeddings, 32768);
  EXPECT_EQ(config.dtype, DType::kF32);
  EXPECT_THAT(config.eos_token_ids, IsEmpty());
  EXPECT_EQ(config.bos_token_id, -1);
}

TEST(ModelConfigTest, BothTransformersStylesParseToTheSameConfig) {
  expect_same(parse_model_config(json::parse(kConfigV4), "v4"),
              parse_model_config(json::parse(kConfigV5), "v5"));
}

TEST(ModelConfigTest, PublishedQwen3_30B_A3B) {
  const ModelConfig config = parse_model_config(json::parse(kQwen3_30B_A3B), "qwen");
  EXPECT_EQ(config.num_layers, 48);
  EXPECT_EQ(config.num_experts, 128);
  EXPECT_EQ(config.num_experts_per_tok, 8);
  EXPECT_EQ(config.head_dim, 128);  // not hidden_size / heads (64): must come from the file
  EXPECT_EQ(config.num_kv_heads, 4);
  EXPECT_TRUE(config.norm_topk_prob);
  EXPECT_EQ(config.rope_theta, 1000000.0);
  EXPECT_EQ(config.dtype, DType::kBF16);
  EXPECT_THAT(config.eos_token_ids, ElementsAre(151645));
  EXPECT_EQ(config.bos_token_id, 151643);
  for (int64_t layer = 0; layer < 48; ++layer) EXPECT_TRUE(config.is_moe_layer(layer)) << layer;
}

TEST(ModelConfigTest, DefaultsForAbsentOptionalFields) {
  json config = json::parse(kConfigV5);
  for (const char* key : {"head_dim", "num_key_value_heads", "mlp_only_layers",
                          "decoder_sparse_step", "norm_topk_prob", "tie_word_embeddings",
                          "attention_bias", "hidden_act", "dtype", "rms_norm_eps"}) {
    config.erase(key);
  }
  const ModelConfig parsed = parse_model_config(config, "defaults");
  EXPECT_EQ(parsed.head_dim, 8);  // 32 / 4
  EXPECT_EQ(parsed.num_kv_heads, 4);
  EXPECT_THAT(parsed.mlp_only_layers, IsEmpty());
  EXPECT_EQ(parsed.decoder_sparse_step, 1);
  EXPECT_FALSE(parsed.norm_topk_prob);
  EXPECT_FALSE(parsed.tie_word_embeddings);
  EXPECT_EQ(parsed.dtype, DType::kBF16);
}

TEST(ModelConfigTest, TokenIdsMayBeNullANumberOrAList) {
  EXPECT_THAT(parse_model_config(v5_with("eos_token_id", 7), "x").eos_token_ids, ElementsAre(7));
  EXPECT_THAT(
      parse_model_config(v5_with("eos_token_id", json::array({7, 9, 7})), "x").eos_token_ids,
      ElementsAre(7, 9));
  EXPECT_THAT(parse_model_config(v5_with("eos_token_id", nullptr), "x").eos_token_ids, IsEmpty());
  EXPECT_EQ(parse_model_config(v5_with("bos_token_id", json::array({5})), "x").bos_token_id, 5);
  EXPECT_THAT(parse_error(v5_with("eos_token_id", "</s>")),
              AllOf(StartsWith("/m/config.json"), HasSubstr("field 'eos_token_id'")));
}

TEST(ModelConfigTest, IsMoeLayerSkipsMlpOnlyLayers) {
  json config = json::parse(kConfigV5);
  config["num_hidden_layers"] = 4;
  config["mlp_only_layers"] = {0, 2};
  const ModelConfig parsed = parse_model_config(config, "x");
  EXPECT_FALSE(parsed.is_moe_layer(0));
  EXPECT_TRUE(parsed.is_moe_layer(1));
  EXPECT_FALSE(parsed.is_moe_layer(2));
  EXPECT_TRUE(parsed.is_moe_layer(3));
}

TEST(ModelConfigTest, IsMoeLayerFollowsDecoderSparseStep) {
  json config = json::parse(kConfigV5);
  config["num_hidden_layers"] = 6;
  config["mlp_only_layers"] = json::array();
  config["decoder_sparse_step"] = 2;
  const ModelConfig parsed = parse_model_config(config, "x");
  // (layer + 1) % 2 == 0: layers 1, 3, 5 are sparse.
  for (int64_t layer = 0; layer < 6; ++layer) {
    EXPECT_EQ(parsed.is_moe_layer(layer), layer % 2 == 1) << layer;
  }
  config["num_local_experts"] = 0;
  const ModelConfig dense = parse_model_config(config, "x");
  for (int64_t layer = 0; layer < 6; ++layer) EXPECT_FALSE(dense.is_moe_layer(layer)) << layer;
}

TEST(ModelConfigTest, UnknownArchitecture) {
  EXPECT_THAT(parse_error(v5_with("architectures", json::array({"LlamaForCausalLM"}))),
              AllOf(StartsWith("/m/config.json"), HasSubstr("unsupported architecture"),
                    HasSubstr("'LlamaForCausalLM'"), HasSubstr("Qwen3MoeForCausalLM")));
}

TEST(ModelConfigTest, MismatchedModelType) {
  EXPECT_THAT(parse_error(v5_with("model_type", "llama")),
              AllOf(StartsWith("/m/config.json"), HasSubstr("field 'model_type'")));
}

TEST(ModelConfigTest, WrongTypedFieldIsNamed) {
  EXPECT_THAT(parse_error(v5_with("hidden_size", "32")),
              AllOf(StartsWith("/m/config.json"), HasSubstr("field 'hidden_size'"),
                    HasSubstr("must be an integer"), HasSubstr("string")));
  EXPECT_THAT(parse_error(v5_with("num_hidden_layers", 2.5)),
              HasSubstr("field 'num_hidden_layers' must be an integer"));
  EXPECT_THAT(parse_error(v5_with("norm_topk_prob", 1)),
              HasSubstr("field 'norm_topk_prob' must be true or false"));
  EXPECT_THAT(parse_error(v5_with("rms_norm_eps", "1e-6")),
              HasSubstr("field 'rms_norm_eps' must be a number"));
  EXPECT_THAT(parse_error(v5_with("mlp_only_layers", 0)),
              HasSubstr("field 'mlp_only_layers' must be a list"));
}

TEST(ModelConfigTest, MissingRequiredField) {
  EXPECT_THAT(
      parse_error(v5_with("vocab_size", kRemove)),
      AllOf(StartsWith("/m/config.json"), HasSubstr("missing required field 'vocab_size'")));
  EXPECT_THAT(parse_error(v5_with("num_local_experts", kRemove)),
              HasSubstr("missing required field 'num_experts'"));
  EXPECT_THAT(parse_error(v5_with("rope_parameters", kRemove)),
              HasSubstr("missing required field 'rope_theta'"));
}

TEST(ModelConfigTest, InconsistentSizes) {
  EXPECT_THAT(parse_error(v5_with("num_key_value_heads", 3)),
              HasSubstr("num_attention_heads (4) is not a multiple of num_key_value_heads (3)"));
  EXPECT_THAT(parse_error(v5_with("num_experts_per_tok", 5)),
              HasSubstr("num_experts_per_tok (5) exceeds the number of experts (4)"));
  EXPECT_THAT(parse_error(v5_with("hidden_size", 0)),
              HasSubstr("field 'hidden_size' must be positive"));
  EXPECT_THAT(parse_error(v5_with("mlp_only_layers", json::array({5}))),
              HasSubstr("field 'mlp_only_layers' names layer 5"));
  json both = json::parse(kConfigV5);
  both["num_experts"] = 8;
  EXPECT_THAT(parse_error(both), HasSubstr("num_experts (8) and num_local_experts (4) disagree"));
}

TEST(ModelConfigTest, UnsupportedFeaturesAreRefusedClearly) {
  EXPECT_THAT(parse_error(v5_with("use_sliding_window", true)),
              AllOf(StartsWith("/m/config.json"), HasSubstr("use_sliding_window"),
                    HasSubstr("sliding-window")));
  EXPECT_THAT(parse_error(v5_with("hidden_act", "gelu")),
              AllOf(HasSubstr("field 'hidden_act'"), HasSubstr("'gelu'")));
  EXPECT_THAT(parse_error(v5_with("dtype", "float64")),
              AllOf(HasSubstr("field 'dtype'"), HasSubstr("'float64'")));
  json v4 = json::parse(kConfigV4);
  v4["torch_dtype"] = "int8";
  EXPECT_THAT(parse_error(v4), HasSubstr("field 'torch_dtype'"));
  v4 = json::parse(kConfigV4);
  v4["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(parse_error(v4),
              AllOf(HasSubstr("field 'rope_scaling'"), HasSubstr("rope type 'yarn'")));
  EXPECT_THAT(
      parse_error(v5_with("rope_parameters", {{"rope_theta", 1e6}, {"rope_type", "llama3"}})),
      AllOf(HasSubstr("field 'rope_parameters'"), HasSubstr("'llama3'")));
  // An explicit default rope_scaling is fine.
  v4["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse_model_config(v4, "x").rope_theta, 10000.0);
}

class LoadModelConfigTest : public testing_util::ScratchDirTest {};

TEST_F(LoadModelConfigTest, MissingConfigJson) {
  const std::string expected = path("config.json");
  EXPECT_THAT(testing_util::error_of([&] { load_model_config(dir_.string()); }),
              AllOf(StartsWith(expected), HasSubstr("not found")));
}

TEST_F(LoadModelConfigTest, CorruptConfigJson) {
  write_text("config.json", "{\"architectures\": [");
  EXPECT_THAT(testing_util::error_of([&] { load_model_config(dir_.string()); }),
              AllOf(StartsWith(path("config.json")), HasSubstr("corrupt JSON")));
}

TEST_F(LoadModelConfigTest, ErrorsNameTheConfigPath) {
  write_text("config.json", v5_with("vocab_size", "300").dump());
  EXPECT_THAT(testing_util::error_of([&] { load_model_config(dir_.string()); }),
              AllOf(StartsWith(path("config.json")), HasSubstr("field 'vocab_size'")));
}

TEST_F(LoadModelConfigTest, MergesEosIdsFromGenerationConfig) {
  write_text("config.json", v5_with("eos_token_id", {151643, 151645}).dump());
  write_text("generation_config.json",
             R"({"bos_token_id": 151643, "eos_token_id": [151645, 151643, 151644]})");
  const ModelConfig config = load_model_config(dir_.string());
  EXPECT_THAT(config.eos_token_ids, ElementsAre(151643, 151645, 151644));
  EXPECT_EQ(config.bos_token_id, 151643);  // config.json had null
  EXPECT_EQ(config.num_experts, 4);
}

TEST_F(LoadModelConfigTest, GenerationConfigWithASingleEosId) {
  write_text("config.json", kConfigV4);
  write_text("generation_config.json", R"({"eos_token_id": 2, "temperature": 0.6})");
  EXPECT_THAT(load_model_config(dir_.string()).eos_token_ids, ElementsAre(2));
}

TEST_F(LoadModelConfigTest, WithoutGenerationConfig) {
  write_text("config.json", kQwen3_30B_A3B);
  EXPECT_THAT(load_model_config(dir_.string()).eos_token_ids, ElementsAre(151645));
}

TEST_F(LoadModelConfigTest, BadGenerationConfigIsNamed) {
  write_text("config.json", kConfigV5);
  write_text("generation_config.json", R"({"eos_token_id": "x"})");
  EXPECT_THAT(testing_util::error_of([&] { load_model_config(dir_.string()); }),
              AllOf(StartsWith(path("generation_config.json")), HasSubstr("field 'eos_token_id'")));
}

// FP8 block-quantized checkpoints: DeepSeek's and Qwen's quantization_config parse; every other
// quantization is refused by name rather than loaded wrong.
TEST(ModelConfigTest, Fp8QuantizationConfig) {
  EXPECT_FALSE(parse_model_config(json::parse(kConfigV5), "x").fp8.has_value());
  const json deepseek = {{"activation_scheme", "dynamic"},
                         {"fmt", "e4m3"},
                         {"quant_method", "fp8"},
                         {"weight_block_size", {128, 128}}};
  const ModelConfig config = parse_model_config(v5_with("quantization_config", deepseek), "x");
  ASSERT_TRUE(config.fp8.has_value());
  EXPECT_EQ(config.fp8->block_rows, 128);
  EXPECT_EQ(config.fp8->block_cols, 128);
  json qwen = deepseek;
  qwen.erase("fmt");
  qwen["modules_to_not_convert"] = {"lm_head", "model.layers.0.mlp.gate"};
  qwen["weight_block_size"] = {64, 32};
  const ModelConfig qwen_config = parse_model_config(v5_with("quantization_config", qwen), "x");
  ASSERT_TRUE(qwen_config.fp8.has_value());
  EXPECT_EQ(qwen_config.fp8->block_rows, 64);
  EXPECT_EQ(qwen_config.fp8->block_cols, 32);
  EXPECT_EQ(qwen_config.fp8->modules_to_not_convert.size(), 2u);

  const auto error_with = [&](const std::string& key, const json& value) {
    json edited = deepseek;
    if (value.is_discarded()) {
      edited.erase(key);
    } else {
      edited[key] = value;
    }
    return parse_error(v5_with("quantization_config", edited));
  };
  EXPECT_THAT(error_with("quant_method", "awq"),
              AllOf(HasSubstr("/m/config.json: quantization_config: field 'quant_method'"),
                    HasSubstr("'awq'"), HasSubstr("quant_method 'fp8'")));
  EXPECT_THAT(error_with("quant_method", kRemove), HasSubstr("'quant_method' is missing"));
  EXPECT_THAT(error_with("activation_scheme", "static"), HasSubstr("no static activation scales"));
  EXPECT_THAT(error_with("fmt", "e5m2"), HasSubstr("e4m3"));
  EXPECT_THAT(error_with("weight_block_size", kRemove), HasSubstr("block-scaled FP8"));
  EXPECT_THAT(error_with("weight_block_size", json::array({128})),
              HasSubstr("two positive integers"));
  EXPECT_THAT(error_with("weight_block_size", json::array({0, 128})),
              HasSubstr("two positive integers"));
}

}  // namespace
}  // namespace tidal
