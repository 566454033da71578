// The CPU model against Hugging Face transformers, for every family with a fixture: greedy tokens
// identical and top logprobs within kLogprobTolerance, for both config styles; for Qwen3-MoE also
// both router normalisations and bf16/f16/f32 weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "model/loader/safetensors_writer.h"
#include "support/fixture.h"

namespace tidal {
namespace {

using testing_util::Completion;
using testing_util::ReferencePrompt;

// transformers' fp32 run and the CPU backend's f32 differ only in summation order: the largest
// difference seen over every family's fixture is printed by each test (about 1e-5).
constexpr float kLogprobTolerance = 1e-4f;

SamplingParams greedy_params(int64_t max_tokens) {
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = max_tokens;
  params.ignore_eos = true;
  params.logprobs = 10;  // more than the reference's 5, so a swap at rank 5 cannot hide a value
  return params;
}

// Runs each prompt alone on a fresh engine over `model_dir` and compares with `fixture`'s
// reference.
void expect_matches_reference(const std::string& model_dir, const std::string& variant,
                              const std::string& fixture = testing_util::kDefaultFixture) {
  const std::vector<ReferencePrompt> reference = testing_util::load_reference(variant, fixture);
  float largest_difference = 0;
  ASSERT_GE(reference.size(), 4u);
  testing_util::LoadedModel loaded = testing_util::load_cpu_model(model_dir);
  for (size_t p = 0; p < reference.size(); ++p) {
    const ReferencePrompt& expected = reference[p];
    ASSERT_GE(expected.greedy_ids.size(), 24u);
    EXPECT_EQ(loaded.tokenizer->encode(expected.text), expected.prompt_ids) << "prompt " << p;
    Engine engine(*loaded.backend, *loaded.model, *loaded.tokenizer, EngineOptions{});
    engine.warm_up();
    const std::vector<Completion> completions = testing_util::run_to_completion(
        engine, {expected.prompt_ids},
        greedy_params(static_cast<int64_t>(expected.greedy_ids.size())));
    const Completion& got = completions.front();
    EXPECT_EQ(got.token_ids, expected.greedy_ids) << "prompt " << p << ": " << expected.text;
    ASSERT_EQ(got.logprobs.size(), expected.top_logprobs.size());
    for (size_t step = 0; step < expected.top_logprobs.size(); ++step) {
      for (const auto& [token, logprob] : expected.top_logprobs[step]) {
        const auto& top = got.logprobs[step].top;
        const auto it = std::find_if(top.begin(), top.end(),
                                     [&](const auto& entry) { return entry.first == token; });
        ASSERT_NE(it, top.end()) << "prompt " << p << " step " << step << ": token " << token
                                 << " missing from tidal's top logprobs";
        EXPECT_NEAR(it->second, logprob, kLogprobTolerance)
            << "prompt " << p << " step " << step << " token " << token;
        largest_difference = std::max(largest_difference, std::abs(it->second - logprob));
      }
    }
    EXPECT_EQ(got.finish_reason, FinishReason::kLength);
  }
  std::printf("[reference] %s (%s, %s): %zu prompts, largest |logprob difference| %.3g\n",
              fixture.c_str(), model_dir.c_str(), variant.c_str(), reference.size(),
              static_cast<double>(largest_difference));
}

void rewrite_config(const std::filesystem::path& dir,
                    const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config;
  {
    std::ifstream in(dir / "config.json");
    config = nlohmann::json::parse(in);
  }
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(2);
}

// The other families' fixtures (tools/make_fixture.py --family new): each in the published
// config style and as transformers 5 writes it.
class FamilyReference : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyReference, GreedyAndLogprobsMatchTransformers) {
  expect_matches_reference(testing_util::fixture_model_dir(GetParam()), "default", GetParam());
}

TEST_P(FamilyReference, Transformers5ConfigStyle) {
  const std::filesystem::path source = testing_util::fixture_model_dir(GetParam());
  const std::filesystem::path copy =
      std::filesystem::temp_directory_path() /
      ("tidal_family_" + GetParam() + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(copy);
  std::filesystem::copy(source, copy, std::filesystem::copy_options::recursive);
  std::filesystem::copy_file(copy / "config.transformers5.json", copy / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  expect_matches_reference(copy.string(), "default", GetParam());
  std::filesystem::remove_all(copy);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyReference,
                         ::testing::Values("tiny-qwen2-moe", "tiny-mixtral",
                                           "tiny-deepseek-v2-lite", "tiny-deepseek-v3"),
                         [](const auto& param_info) {
                           std::string name = param_info.param.substr(5);  // without "tiny-"
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Mixtral as transformers 5 saves it: the MoE block under "mlp.", each layer's experts fused into
// experts.gate_up_proj [E, 2I, H] (w1 rows then w3 rows) and experts.down_proj [E, H, I].
TEST(FamilyReference, MixtralFusedExpertsAsTransformers5SavesThem) {
  const std::string fixture = "tiny-mixtral";
  const std::filesystem::path copy = std::filesystem::temp_directory_path() /
                                     ("tidal_fused_mixtral_" + std::to_string(::getpid()));
  std::filesystem::remove_all(copy);
  std::filesystem::copy(testing_util::fixture_model_dir(fixture), copy,
                        std::filesystem::copy_options::recursive);
  std::filesystem::copy_file(copy / "config.transformers5.json", copy / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  const Checkpoint original = Checkpoint::open(testing_util::fixture_model_dir(fixture));
  for (const auto& entry : std::filesystem::directory_iterator(copy)) {
    if (entry.path().extension() == ".safetensors" ||
        entry.path().filename() == "model.safetensors.index.json") {
      std::filesystem::remove(entry.path());
    }
  }
  const std::string block = ".block_sparse_moe.";
  SafetensorsWriter writer;
  for (const std::string& name : original.names()) {
    const TensorInfo& tensor = original.tensor(name);
    const size_t at = name.find(block);
    if (at == std::string::npos) {
      writer.add_floats(name, DType::kF32, tensor.shape, decode_floats(tensor));
      continue;
    }
    // The router moves under "mlp."; the experts are fused below.
    if (name.substr(at + block.size()) == "gate.weight") {
      writer.add_floats(name.substr(0, at) + ".mlp.gate.weight", DType::kF32, tensor.shape,
                        decode_floats(tensor));
    }
  }
  // Experts in index order, each gate (w1) then up (w3) rows; down (w2) alone.
  const ModelConfig config = load_model_config(copy.string());
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer);
    std::vector<float> fused_gate_up, fused_down;
    for (int64_t e = 0; e < config.num_experts; ++e) {
      const std::string expert = prefix + block + "experts." + std::to_string(e) + ".";
      for (const char* part : {"w1", "w3"}) {
        const std::vector<float> values = decode_floats(original.tensor(expert + part + ".weight"));
        fused_gate_up.insert(fused_gate_up.end(), values.begin(), values.end());
      }
      const std::vector<float> values = decode_floats(original.tensor(expert + "w2.weight"));
      fused_down.insert(fused_down.end(), values.begin(), values.end());
    }
    const int64_t inter = config.moe_intermediate_size;
    writer.add_floats(prefix + ".mlp.experts.gate_up_proj", DType::kF32,
                      {config.num_experts, 2 * inter, config.hidden_size}, fused_gate_up);
    writer.add_floats(prefix + ".mlp.experts.down_proj", DType::kF32,
                      {config.num_experts, config.hidden_size, inter}, fused_down);
  }
  writer.write((copy / "model.safetensors").string());
  ASSERT_TRUE(Checkpoint::open(copy.string()).has("model.layers.0.mlp.experts.gate_up_proj"));
  expect_matches_reference(copy.string(), "default", fixture);
  std::filesystem::remove_all(copy);
}

TEST(ModelReference, GreedyAndLogprobsMatchTransformers) {
  expect_matches_reference(testing_util::fixture_model_dir(), "default");
}

TEST(ModelReference, RouterWithoutTopkRenormalisation) {
  testing_util::ModelDirCopy copy;
  rewrite_config(copy.path(), [](nlohmann::json& config) { config["norm_topk_prob"] = false; });
  expect_matches_reference(copy.path().string(), "norm_topk_prob_false");
}

TEST(ModelReference, Transformers5ConfigStyle) {
  testing_util::ModelDirCopy copy;
  std::filesystem::copy_file(copy.path() / "config.transformers5.json", copy.path() / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  {
    std::ifstream in(copy.path() / "config.json");
    const nlohmann::json config = nlohmann::json::parse(in);
    ASSERT_TRUE(config.contains("num_local_experts"));
    ASSERT_TRUE(config.contains("rope_parameters"));
    ASSERT_FALSE(config.contains("num_experts"));
  }
  expect_matches_reference(copy.path().string(), "default");
}

// The fixture is sharded bf16; the same weights as one f32 or f16 file must give the same model.
void expect_converted_checkpoint_matches(DType dtype) {
  testing_util::ModelDirCopy copy;
  const Checkpoint original = Checkpoint::open(testing_util::fixture_model_dir());
  for (const auto& entry : std::filesystem::directory_iterator(copy.path())) {
    if (entry.path().extension() == ".safetensors" ||
        entry.path().filename() == "model.safetensors.index.json") {
      std::filesystem::remove(entry.path());
    }
  }
  write_converted_checkpoint(original, dtype, (copy.path() / "model.safetensors").string());
  const Checkpoint converted = Checkpoint::open(copy.path().string());
  ASSERT_EQ(*converted.tensor("model.embed_tokens.weight").dtype, dtype);
  expect_matches_reference(copy.path().string(), "default");
}

TEST(ModelReference, SingleFileF32Weights) {
  expect_converted_checkpoint_matches(DType::kF32);
}
TEST(ModelReference, SingleFileF16Weights) {
  expect_converted_checkpoint_matches(DType::kF16);
}

// FP8 block-quantized checkpoints (tools/make_fp8_fixture.py): e4m3 weights with block scales,
// dequantized by the CPU backend as it reads them, against transformers' fp32 run of the
// dequantized weights. Qwen's config style with blocks of [16, 24] (several per matrix, partial
// at the edge, BF16 scales); DeepSeek-V3's with [128, 128] (F32 scales; latent attention's split
// projections dequantized at load).
TEST(Fp8Reference, QwenStyleBlocksMatchTransformers) {
  expect_matches_reference(testing_util::fixture_model_dir("tiny-qwen3-moe-fp8"), "default",
                           "tiny-qwen3-moe-fp8");
}

TEST(Fp8Reference, DeepSeekStyleMatchesTransformers) {
  expect_matches_reference(testing_util::fixture_model_dir("tiny-deepseek-v3-fp8"), "default",
                           "tiny-deepseek-v3-fp8");
}

// The weights stay FP8 in memory: the loaded expert slots are F8_E4M3 with their scales.
TEST(Fp8Reference, ExpertSlotsKeepFp8WithScales) {
  testing_util::LoadedModel loaded =
      testing_util::load_cpu_model(testing_util::fixture_model_dir("tiny-qwen3-moe-fp8"));
  const std::vector<ExpertSlots> slots = loaded.model->moe_expert_slots();
  ASSERT_FALSE(slots.empty());
  for (const ExpertSlots& layer : slots) {
    EXPECT_EQ(layer.gate_up.dtype, DType::kF8E4M3);
    EXPECT_EQ(layer.down.dtype, DType::kF8E4M3);
    // gate_up [8, 64, 64] in blocks of [16, 24]: 2 + 2 row blocks (gate, up) x 3 column blocks
    // (24, 24, 16), F32; then the weights; down [8, 64, 32]: 4 x 2 blocks.
    const std::vector<ExpertSlots::Region> regions = layer.regions();
    ASSERT_EQ(regions.size(), 4u);
    EXPECT_EQ(regions[0].slot_bytes, 64u * 64u);
    EXPECT_EQ(regions[1].slot_bytes, 4u * 3u * 4u);
    EXPECT_EQ(regions[2].slot_bytes, 64u * 32u);
    EXPECT_EQ(regions[3].slot_bytes, 4u * 2u * 4u);
  }
}

// An F8_E4M3 checkpoint whose config.json lost its quantization_config: nothing says how its
// scales are laid out, so loading stops naming the tensor, never guessing a block size.
TEST(Fp8Reference, Fp8WeightsWithoutAQuantizationConfigAreRefused) {
  const std::filesystem::path copy = std::filesystem::temp_directory_path() /
                                     ("tidal_fp8_unconfigured_" + std::to_string(::getpid()));
  std::filesystem::remove_all(copy);
  std::filesystem::copy(testing_util::fixture_model_dir("tiny-qwen3-moe-fp8"), copy,
                        std::filesystem::copy_options::recursive);
  rewrite_config(copy, [](nlohmann::json& config) { config.erase("quantization_config"); });
  try {
    testing_util::load_cpu_model(copy.string());
    ADD_FAILURE() << "FP8 weights loaded without a quantization_config";
  } catch (const Error& error) {
    EXPECT_NE(
        std::string(error.what()).find("is F8_E4M3 but config.json has no quantization_config"),
        std::string::npos)
        << error.what();
  }
  std::filesystem::remove_all(copy);
}

}  // namespace
}  // namespace tidal
