// DeepSeek-V2/V3: multi-head latent attention (q LoRA optional, a compressed KV latent, decoupled
// rotary dims, YaRN), first_k_dense_replace dense layers, then MoE layers of routed experts plus
// always-on shared experts added unweighted. V2 routes by softmax, greedy or group-limited (a
// group scores its best expert), weights times routed_scaling_factor; V3 (noaux_tc) by sigmoid,
// choosing on sigmoid + e_score_correction_bias among the topk_group best of n_group groups (a
// group scores the sum of its two best), weights the unbiased sigmoids, renormalised, times
// routed_scaling_factor.
#include "model/arch/deepseek/deepseek.h"

#include <cmath>

#include "model/layers/moe_decoder.h"
#include "model/rope_scaling.h"

namespace tidal {
namespace {

enum class Version { kV2, kV3 };

MoeDecoderNames deepseek_names() {
  MoeDecoderNames names;
  names.moe.shared_expert = "shared_experts.";
  return names;
}

int64_t non_negative(const ConfigFields& fields, const char* key, int64_t fallback) {
  const int64_t value = fields.optional_int(key).value_or(fallback);
  if (value < 0) fields.fail(key, "must not be negative, got ", value);
  return value;
}

void parse_experts(const ConfigFields& fields, ModelConfig& config) {
  config.num_experts = fields.required_positive("n_routed_experts");
  config.num_experts_per_tok = fields.required_positive("num_experts_per_tok");
  if (config.num_experts_per_tok > config.num_experts) {
    fields.fail("num_experts_per_tok", "(", config.num_experts_per_tok,
                ") exceeds n_routed_experts (", config.num_experts, ")");
  }
  config.moe_intermediate_size = fields.required_positive("moe_intermediate_size");
  if (const int64_t freq = fields.optional_int("moe_layer_freq").value_or(1); freq != 1) {
    fields.fail("moe_layer_freq", "is ", freq, "; tidal supports 1 (every layer from ",
                "first_k_dense_replace on is sparse), as every published DeepSeek model");
  }
  const int64_t dense = non_negative(fields, "first_k_dense_replace", 0);
  if (dense > config.num_layers) {
    fields.fail("first_k_dense_replace", "(", dense, ") exceeds num_hidden_layers (",
                config.num_layers, ")");
  }
  config.mlp_only_layers.clear();
  for (int64_t layer = 0; layer < dense; ++layer) config.mlp_only_layers.push_back(layer);
  config.decoder_sparse_step = 1;
  config.intermediate_size = dense > 0 ? fields.required_positive("intermediate_size")
                                       : fields.optional_int("intermediate_size").value_or(0);
  config.shared_expert_intermediate_size =
      non_negative(fields, "n_shared_experts", 0) * config.moe_intermediate_size;
  config.shared_expert_gated = false;
}

void parse_router(const ConfigFields& fields, ModelConfig& config, Version version) {
  RouterConfig& router = config.router;
  router.routed_scaling_factor =
      static_cast<float>(fields.optional_number("routed_scaling_factor").value_or(1.0));
  if (!(router.routed_scaling_factor > 0)) {
    fields.fail("routed_scaling_factor", "must be positive, got ", router.routed_scaling_factor);
  }
  config.norm_topk_prob = fields.boolean("norm_topk_prob", false);
  const std::string scoring = fields.optional_string("scoring_func").value_or("softmax");
  const std::string method = fields.optional_string("topk_method")
                                 .value_or(version == Version::kV3 ? "noaux_tc" : "greedy");
  bool grouped = false;
  if (version == Version::kV2) {
    if (scoring != "softmax") {
      fields.fail("scoring_func", "is '", scoring, "'; DeepSeek-V2 scores by 'softmax'");
    }
    if (method != "greedy" && method != "group_limited_greedy") {
      fields.fail("topk_method", "is '", method,
                  "'; DeepSeek-V2 routes by 'greedy' or 'group_limited_greedy'");
    }
    // DeepSeek's own V2 code renormalises without routed_scaling_factor when norm_topk_prob is
    // set, transformers scales and never renormalises: no published V2 sets it, and tidal will
    // not guess which of the two a checkpoint was trained with.
    if (config.norm_topk_prob) {
      fields.fail("norm_topk_prob",
                  "is true; DeepSeek-V2's reference code and transformers "
                  "disagree on what it means, so tidal refuses it");
    }
    grouped = method == "group_limited_greedy";
  } else {
    if (scoring != "sigmoid" && scoring != "softmax") {
      fields.fail("scoring_func", "is '", scoring, "'; tidal supports 'sigmoid' and 'softmax'");
    }
    if (method != "noaux_tc") {
      fields.fail("topk_method", "is '", method, "'; DeepSeek-V3 routes by 'noaux_tc'");
    }
    router.sigmoid = scoring == "sigmoid";
    router.selection_bias = true;
    router.group_score_top2_sum = true;
    grouped = true;
  }
  if (!grouped) return;
  router.num_groups = fields.required_positive("n_group");
  router.topk_groups = fields.required_positive("topk_group");
  if (config.num_experts % router.num_groups != 0) {
    fields.fail("n_group", "(", router.num_groups, ") does not divide n_routed_experts (",
                config.num_experts, ")");
  }
  if (router.topk_groups > router.num_groups) {
    fields.fail("topk_group", "(", router.topk_groups, ") exceeds n_group (", router.num_groups,
                ")");
  }
  const int64_t group_size = config.num_experts / router.num_groups;
  if (router.group_score_top2_sum && router.num_groups > 1 && group_size < 2) {
    fields.fail("n_group", "leaves groups of one expert; noaux_tc scores a group by its two best");
  }
  if (config.num_experts_per_tok > router.topk_groups * group_size) {
    fields.fail("num_experts_per_tok", "(", config.num_experts_per_tok, ") exceeds the ",
                router.topk_groups * group_size, " experts of topk_group groups");
  }
}

void parse_latent_attention(const ConfigFields& fields, ModelConfig& config) {
  MlaConfig& mla = config.mla;
  mla.q_lora_rank = non_negative(fields, "q_lora_rank", 0);  // null: no q LoRA (V2-Lite)
  mla.kv_lora_rank = fields.required_positive("kv_lora_rank");
  mla.qk_nope_head_dim = fields.required_positive("qk_nope_head_dim");
  mla.qk_rope_head_dim = fields.required_positive("qk_rope_head_dim");
  mla.v_head_dim = fields.required_positive("v_head_dim");
  if (mla.qk_rope_head_dim % 2 != 0) {
    fields.fail("qk_rope_head_dim", "must be even, got ", mla.qk_rope_head_dim);
  }
  if (config.attention_bias) {
    fields.fail("attention_bias", "is true; tidal's latent attention has no projection biases");
  }
  if (!fields.boolean("rope_interleave", true)) {
    fields.fail("rope_interleave",
                "is false; tidal rotates DeepSeek's rotary dims as "
                "interleaved pairs, as the published models do");
  }
  config.head_dim = mla.qk_head_dim();
  config.num_kv_heads = config.num_heads;  // each head has its own keys, expanded from the latent
  config.kv_cache = {.key_heads = 1,
                     .key_dim = mla.kv_lora_rank,
                     .value_heads = 1,
                     .value_dim = mla.qk_rope_head_dim};
  config.attention_scale =
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(mla.qk_head_dim())));
}

// YaRN (the published V2 and V3 use it): frequencies, the cos/sin factor, and the softmax scale's
// mscale(factor, mscale_all_dim)^2.
void parse_rope_scaling(const ConfigFields& fields, ModelConfig& config) {
  const RopeScalingField rope = find_rope_scaling(fields);
  if (rope.type != "yarn") return;  // default RoPE, or refused by the common parser
  const std::string source = cat(fields.source(), " (", rope.field, ")");
  const ConfigFields yarn_fields(*rope.object, source);
  YarnParameters yarn;
  yarn.factor = yarn_fields.optional_number("factor").value_or(0.0);
  if (!(yarn.factor >= 1.0)) yarn_fields.fail("factor", "must be at least 1 for YaRN");
  yarn.original_max_position_embeddings =
      yarn_fields.optional_int("original_max_position_embeddings")
          .value_or(config.max_position_embeddings);
  yarn.beta_fast = yarn_fields.optional_number("beta_fast").value_or(32.0);
  yarn.beta_slow = yarn_fields.optional_number("beta_slow").value_or(1.0);
  yarn.mscale = yarn_fields.optional_number("mscale").value_or(0.0);
  yarn.mscale_all_dim = yarn_fields.optional_number("mscale_all_dim").value_or(0.0);
  if (yarn_fields.present("attention_factor")) {
    yarn_fields.fail("attention_factor",
                     "is set; tidal derives it from mscale and "
                     "mscale_all_dim as DeepSeek's configs expect");
  }
  config.rope_inv_freq = yarn_inv_freq(config.mla.qk_rope_head_dim, config.rope_theta, yarn);
  config.rope_attention_factor = static_cast<float>(yarn_attention_factor(yarn));
  if (yarn.mscale_all_dim != 0.0) {
    const double mscale = yarn_mscale(yarn.factor, yarn.mscale_all_dim);
    config.attention_scale = static_cast<float>(
        mscale * mscale / std::sqrt(static_cast<double>(config.mla.qk_head_dim())));
  }
}

template <Version version>
void parse_config(const ConfigFields& fields, ModelConfig& config) {
  parse_experts(fields, config);
  parse_router(fields, config, version);
  parse_latent_attention(fields, config);
  parse_rope_scaling(fields, config);
}

std::unique_ptr<CausalLm> make_model(Backend& backend, ModelConfig config, Checkpoint checkpoint,
                                     ModelShard shard) {
  return std::make_unique<MoeDecoder>(backend, std::move(config), std::move(checkpoint),
                                      std::move(shard), deepseek_names());
}

std::vector<SyntheticTensor> checkpoint_tensors(const ModelConfig& config) {
  return MoeDecoder::checkpoint_tensors(config, deepseek_names());
}

}  // namespace

const ModelFamily& deepseek_v2_family() {
  static const ModelFamily family{.architecture = "DeepseekV2ForCausalLM",
                                  .model_type = "deepseek_v2",
                                  .parse_config = parse_config<Version::kV2>,
                                  .make_model = make_model,
                                  .checkpoint_tensors = checkpoint_tensors};
  return family;
}

const ModelFamily& deepseek_v3_family() {
  static const ModelFamily family{.architecture = "DeepseekV3ForCausalLM",
                                  .model_type = "deepseek_v3",
                                  .parse_config = parse_config<Version::kV3>,
                                  .make_model = make_model,
                                  .checkpoint_tensors = checkpoint_tensors};
  return family;
}

}  // namespace tidal
