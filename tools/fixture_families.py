"""Model families for tools/make_fixture.py: per family the published config, the expected
checkpoint layout, the router losses used in training and the router margins checked on the
references. Everything that does not depend on the family lives in make_fixture.py.

Each family describes its config in the published (transformers 4.x / original hub) style;
the training config is made from that dict by transformers 5 itself (AutoConfig on a
config.json holding it), so that the published style is what the references were computed
from. Qwen3-MoE predates this module and keeps its original construction (kwargs), so that
rerunning it reproduces the committed fixture byte for byte.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers.modeling_rope_utils import yarn_get_mscale

# ---------------------------------------------------------------- shared model sizes
HIDDEN = 64
LAYERS = 4
DENSE_I = 128  # dense MLP layers (and Mixtral has none)
MOE_I = 32  # one routed expert
RMS_EPS = 1e-6
MAX_POS = 2048

# router margin hinges (training); see SoftmaxRouting / SigmoidGroupRouting
ROUTER_MARGIN = 0.5  # on the router-logit gap (softmax routers)
SIGMOID_MARGIN = 0.1  # on the sigmoid(logit) + bias selection-score gaps (V3)
ROUTER_MARGIN_COEF = 0.5
BALANCE_COEF = 1.0


def bf16_exact(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(torch.float32)


# ============================================================================ routing kinds
class SoftmaxRouting:
    """softmax(router logits) -> top-k. Training: per-layer Switch-style balance loss plus a
    hinge on the router-logit gap between the k-th and (k+1)-th expert (softmax is monotonic,
    so the logit gap orders exactly what the probability gap orders). Reference check: the
    k-th / (k+1)-th probability gap, which is what torch.topk on the probabilities resolves."""

    gap_kinds = ("router",)

    def __init__(self, experts: int, topk: int):
        self.experts, self.topk = experts, topk

    def describe(self) -> str:
        return "softmax over all experts, top-k of the probabilities"

    def router_losses(self, gates, router_logits):
        EXPERTS, TOPK = self.experts, self.topk
        balance, hinge = 0.0, 0.0
        for r in router_logits:
            probs = torch.softmax(r, dim=-1)
            top = torch.topk(r, TOPK + 1, dim=-1)
            chosen = torch.zeros_like(probs).scatter_(1, top.indices[:, :TOPK], 1.0)
            balance = balance + EXPERTS * (chosen.mean(0) / TOPK * probs.mean(0)).sum()
            hinge = hinge + torch.relu(ROUTER_MARGIN - (top.values[:, TOPK - 1] - top.values[:, TOPK])).mean()
        balance = balance / len(router_logits)
        hinge = hinge / len(router_logits)
        return balance, hinge

    def gaps(self, gate, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(logits.detach().float(), dim=-1)
        top = torch.topk(probs, self.topk + 1, dim=-1).values
        return {"router": top[:, self.topk - 1] - top[:, self.topk]}


class SigmoidGroupRouting:
    """DeepSeek-V3 `noaux_tc`: s = sigmoid(logit); selection score c = s + e_score_correction_bias;
    group score = sum of the 2 largest c in the group; keep the topk_group best groups; top-k of c
    over the kept groups (others -inf); weights = s at the chosen experts, normalized to sum 1
    (norm_topk_prob), times routed_scaling_factor.

    Two discrete choices, both checked: the group choice (gap between the topk_group-th and the
    next group score) and the expert choice (gap between the k-th and (k+1)-th c among the kept
    groups). Training: hinges on both gaps, and the V3 paper's complementary balance loss (chosen
    fractions times the mean normalized affinity s / sum(s)): it raises s of the experts the
    fixed bias leaves unchosen. (A softmax(c / T) soft assignment instead stalled the LM loss.)"""

    gap_kinds = ("router", "group")

    def __init__(self, experts: int, topk: int, n_group: int, topk_group: int):
        self.experts, self.topk, self.n_group, self.topk_group = experts, topk, n_group, topk_group
        if topk + 1 > topk_group * experts // n_group:
            raise SystemExit("kept groups hold too few experts for a (k+1)-th candidate")

    def describe(self) -> str:
        return ("sigmoid scores; selection score = sigmoid + e_score_correction_bias; group score = "
                "sum of the top-2 selection scores of the group; top-k over the topk_group best "
                "groups (others masked to -inf); weights = sigmoid scores of the chosen experts, "
                "normalized to sum 1, times routed_scaling_factor")

    def select(self, c: torch.Tensor):
        """c: [T, E] selection scores -> (group gaps, kept-group mask [T, E], masked c)."""
        T, G, E = c.shape[0], self.n_group, self.experts
        gs = c.view(T, G, E // G).topk(2, dim=-1).values.sum(-1)  # [T, G]
        gtop = gs.topk(self.topk_group + 1, dim=-1)
        group_gap = gtop.values[:, self.topk_group - 1] - gtop.values[:, self.topk_group]
        gmask = torch.zeros_like(gs).scatter_(1, gtop.indices[:, : self.topk_group], 1.0)
        emask = gmask.unsqueeze(-1).expand(T, G, E // G).reshape(T, E).bool()
        return group_gap, emask, c.masked_fill(~emask, float("-inf"))

    def router_losses(self, gates, router_logits):
        E, K = self.experts, self.topk
        balance, hinge = 0.0, 0.0
        for gate, r in zip(gates, router_logits):
            s = torch.sigmoid(r)
            c = s + gate.e_score_correction_bias.detach()
            group_gap, _, masked = self.select(c)
            top = masked.topk(K + 1, dim=-1)
            chosen = torch.zeros_like(s).scatter_(1, top.indices[:, :K], 1.0)
            affinity = s / s.sum(-1, keepdim=True)
            balance = balance + E * (chosen.mean(0) / K * affinity.mean(0)).sum()
            hinge = hinge + torch.relu(SIGMOID_MARGIN - (top.values[:, K - 1] - top.values[:, K])).mean()
            hinge = hinge + torch.relu(SIGMOID_MARGIN - group_gap).mean()
        return balance / len(router_logits), hinge / len(router_logits)

    def gaps(self, gate, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        c = torch.sigmoid(logits.detach().float()) + gate.e_score_correction_bias.float()
        group_gap, _, masked = self.select(c)
        top = masked.topk(self.topk + 1, dim=-1).values
        return {"router": top[:, self.topk - 1] - top[:, self.topk], "group": group_gap}


# ============================================================================ families
class Family:
    key: str  # --family value
    name: str  # fixture folder / served name
    arch: str  # transformers class
    experts: int
    topk: int
    moe_layers: list[int]
    seeds = [1234, 2345, 3456, 4567]  # tried in order if the checks can't be met
    # from_pretrained overrides per reference variant
    variants: dict[str, dict] = {"default": {}}
    # new families also record margins / config_summary / expert usage in the reference JSON
    extended_reference = True
    # tensor name -> safetensors dtype, where not BF16
    tensor_dtypes: dict[str, str] = {}
    # fixture_plain_forward.MUTATIONS whose effect on the references is recorded
    mutations: list[str] = []

    routing: SoftmaxRouting | SigmoidGroupRouting

    @property
    def model_class(self):
        return getattr(transformers, self.arch)

    # ---- config
    def published_config(self, vocab: int, ids: dict) -> dict:
        raise NotImplementedError

    def make_config(self, vocab: int, ids: dict):
        """The training config, read by transformers 5 from the published-style config.json."""
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "config.json").write_text(json.dumps(self.published_config(vocab, ids)))
            return transformers.AutoConfig.from_pretrained(d)

    def cfg5_expected(self, cfg4: dict) -> dict:
        """Values expected in the transformers-5 config.json for keys that the published config
        does not hold under the same name (the rest must equal the published values)."""
        exp = {"dtype": "bfloat16", "pad_token_id": None, "output_router_logits": False}
        rope = {"rope_theta": cfg4["rope_theta"], "rope_type": "default"}
        if cfg4.get("rope_scaling"):
            rope.update(cfg4["rope_scaling"])
            rope["rope_type"] = cfg4["rope_scaling"]["type"]
        exp["rope_parameters"] = rope
        return exp

    # ---- model
    def prepare_model(self, model, seed: int) -> None:
        """After random init, before training (fixed buffers)."""

    def moe_gates(self, model) -> list:
        return [model.model.layers[i].mlp.gate for i in self.moe_layers]

    def check_loaded(self, model, vname: str) -> None:
        """Assertions on a model loaded from the staged / final files."""

    def before_save(self, model) -> None:
        """Called on the bf16 model right before save_pretrained."""

    # ---- layout
    def expected_tensor_shapes(self, vocab: int) -> dict:
        shapes = {"model.embed_tokens.weight": [vocab, HIDDEN], "lm_head.weight": [vocab, HIDDEN],
                  "model.norm.weight": [HIDDEN]}
        for n in range(LAYERS):
            p = f"model.layers.{n}."
            shapes[p + "input_layernorm.weight"] = [HIDDEN]
            shapes[p + "post_attention_layernorm.weight"] = [HIDDEN]
            shapes.update(self.attention_shapes(p + "self_attn."))
            shapes.update(self.mlp_shapes(n, p))
        return shapes

    def attention_shapes(self, p: str) -> dict:
        raise NotImplementedError

    def mlp_shapes(self, n: int, p: str) -> dict:
        raise NotImplementedError

    @staticmethod
    def swiglu_shapes(p: str, inter: int, names=("gate_proj", "up_proj", "down_proj")) -> dict:
        g, u, d = names
        return {p + g + ".weight": [inter, HIDDEN], p + u + ".weight": [inter, HIDDEN],
                p + d + ".weight": [HIDDEN, inter]}

    # ---- reference JSON
    def config_summary(self, model, cfg4: dict) -> dict:
        c = model.config
        s = {
            "architecture": self.arch, "model_type": c.model_type,
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "num_hidden_layers": c.num_hidden_layers, "rms_norm_eps": c.rms_norm_eps,
            "tie_word_embeddings": c.tie_word_embeddings,
            "dense_layers": [i for i in range(LAYERS) if i not in self.moe_layers],
            "moe_layers": list(self.moe_layers),
            "num_routed_experts": self.experts, "experts_per_token": self.topk,
            "routing": self.routing.describe(),
            "softmax_scale": model.model.layers[0].self_attn.scaling,
            "rope_inv_freq": [float(v) for v in model.model.rotary_emb.inv_freq],
            "rope_attention_factor": float(model.model.rotary_emb.attention_scaling),
            "bos_token_id": cfg4.get("bos_token_id"), "eos_token_id": cfg4.get("eos_token_id"),
        }
        return s


class GqaFamily(Family):
    """q/k/v/o attention with GQA and rotate-half RoPE over the whole head."""

    heads, kv_heads, head_dim = 4, 2, 16
    qkv_bias = False
    qk_norm = False

    def attention_shapes(self, p: str) -> dict:
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        s = {p + "q_proj.weight": [H * D, HIDDEN], p + "k_proj.weight": [KV * D, HIDDEN],
             p + "v_proj.weight": [KV * D, HIDDEN], p + "o_proj.weight": [HIDDEN, H * D]}
        if self.qkv_bias:
            s.update({p + "q_proj.bias": [H * D], p + "k_proj.bias": [KV * D], p + "v_proj.bias": [KV * D]})
        if self.qk_norm:
            s.update({p + "q_norm.weight": [D], p + "k_norm.weight": [D]})
        return s

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        s.update({"num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
                  "head_dim": self.head_dim, "qkv_bias": self.qkv_bias, "qk_norm": self.qk_norm,
                  "rope_theta": cfg4["rope_theta"],
                  "rope_layout": "rotate-half: dims i and i + head_dim/2 form a pair rotated by inv_freq[i]"})
        return s


# ---------------------------------------------------------------------------- Qwen3-MoE
class Qwen3Moe(GqaFamily):
    """The original fixture. make_config / published_config are kept exactly as they were."""

    key, name, arch = "qwen3-moe", "tiny-qwen3-moe", "Qwen3MoeForCausalLM"
    experts, topk = 8, 2
    moe_layers = [1, 2, 3]
    qk_norm = True
    ROPE_THETA = 1_000_000.0
    variants = {"default": {}, "norm_topk_prob_false": {"norm_topk_prob": False}}
    extended_reference = False

    def __init__(self):
        self.routing = SoftmaxRouting(self.experts, self.topk)

    def make_config(self, vocab, ids):
        return transformers.Qwen3MoeConfig(
            vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=DENSE_I, num_hidden_layers=LAYERS,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads, head_dim=self.head_dim,
            hidden_act="silu", max_position_embeddings=MAX_POS, initializer_range=0.02,
            rms_norm_eps=RMS_EPS, use_cache=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": self.ROPE_THETA},
            attention_bias=False, use_sliding_window=False, attention_dropout=0.0,
            decoder_sparse_step=1, moe_intermediate_size=MOE_I, num_experts_per_tok=self.topk,
            num_experts=self.experts, norm_topk_prob=True, output_router_logits=False,
            router_aux_loss_coef=0.001, mlp_only_layers=[0],
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=None,
            architectures=["Qwen3MoeForCausalLM"],
        )

    def published_config(self, vocab, ids):
        # transformers 4.x published style (as Qwen/Qwen3-30B-A3B's config.json)
        return {
            "architectures": ["Qwen3MoeForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"],
            "decoder_sparse_step": 1,
            "eos_token_id": ids["<|im_end|>"],
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": HIDDEN,
            "initializer_range": 0.02,
            "intermediate_size": DENSE_I,
            "max_position_embeddings": MAX_POS,
            "max_window_layers": LAYERS,
            "mlp_only_layers": [0],
            "model_type": "qwen3_moe",
            "moe_intermediate_size": MOE_I,
            "norm_topk_prob": True,
            "num_attention_heads": self.heads,
            "num_experts": self.experts,
            "num_experts_per_tok": self.topk,
            "num_hidden_layers": LAYERS,
            "num_key_value_heads": self.kv_heads,
            "output_router_logits": False,
            "rms_norm_eps": RMS_EPS,
            "rope_scaling": None,
            "rope_theta": self.ROPE_THETA,
            "router_aux_loss_coef": 0.001,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": vocab,
        }

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        exp["num_local_experts"] = self.experts
        return exp

    def mlp_shapes(self, n, p):
        if n not in self.moe_layers:
            return self.swiglu_shapes(p + "mlp.", DENSE_I)
        s = {p + "mlp.gate.weight": [self.experts, HIDDEN]}
        for j in range(self.experts):
            s.update(self.swiglu_shapes(p + f"mlp.experts.{j}.", MOE_I))
        return s

    def check_loaded(self, model, vname):
        for layer in model.model.layers[1:]:
            assert layer.mlp.gate.norm_topk_prob == model.config.norm_topk_prob
        assert model.config.norm_topk_prob is (vname == "default")


# ---------------------------------------------------------------------------- Qwen2-MoE
class Qwen2Moe(GqaFamily):
    key, name, arch = "qwen2-moe", "tiny-qwen2-moe", "Qwen2MoeForCausalLM"
    experts, topk = 8, 2
    moe_layers = [1, 2, 3]  # mlp_only_layers [0]
    qkv_bias = True
    SHARED_I = 48
    mutations = ["rope_interleaved", "no_qkv_bias", "ungated_shared_expert"]
    ROPE_THETA = 1_000_000.0

    def __init__(self):
        self.routing = SoftmaxRouting(self.experts, self.topk)

    def published_config(self, vocab, ids):
        # as Qwen/Qwen1.5-MoE-A2.7B's config.json (transformers 4.x), plus mlp_only_layers
        return {
            "architectures": ["Qwen2MoeForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"],
            "decoder_sparse_step": 1,
            "eos_token_id": ids["<|im_end|>"],
            "hidden_act": "silu",
            "hidden_size": HIDDEN,
            "initializer_range": 0.02,
            "intermediate_size": DENSE_I,
            "max_position_embeddings": MAX_POS,
            "max_window_layers": LAYERS,
            "mlp_only_layers": [0],
            "model_type": "qwen2_moe",
            "moe_intermediate_size": MOE_I,
            "norm_topk_prob": False,
            "num_attention_heads": self.heads,
            "num_experts": self.experts,
            "num_experts_per_tok": self.topk,
            "num_hidden_layers": LAYERS,
            "num_key_value_heads": self.kv_heads,
            "output_router_logits": False,
            "rms_norm_eps": RMS_EPS,
            "rope_theta": self.ROPE_THETA,
            "router_aux_loss_coef": 0.001,
            "shared_expert_intermediate_size": self.SHARED_I,
            "sliding_window": MAX_POS,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.40.0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": vocab,
        }

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        exp.update({"qkv_bias": True, "layer_types": ["full_attention"] * LAYERS,
                    # transformers 5 stores 0 when use_sliding_window is false
                    "sliding_window": 0})
        return exp

    def mlp_shapes(self, n, p):
        if n not in self.moe_layers:
            return self.swiglu_shapes(p + "mlp.", DENSE_I)
        s = {p + "mlp.gate.weight": [self.experts, HIDDEN],
             p + "mlp.shared_expert_gate.weight": [1, HIDDEN]}
        s.update(self.swiglu_shapes(p + "mlp.shared_expert.", self.SHARED_I))
        for j in range(self.experts):
            s.update(self.swiglu_shapes(p + f"mlp.experts.{j}.", MOE_I))
        return s

    def check_loaded(self, model, vname):
        assert model.config.norm_topk_prob is False
        for i, layer in enumerate(model.model.layers):
            is_moe = hasattr(layer.mlp, "gate")
            assert is_moe == (i in self.moe_layers), f"layer {i}: sparse={is_moe}"
            assert not layer.mlp.gate.norm_topk_prob if is_moe else True
            for proj in ("q_proj", "k_proj", "v_proj"):
                b = getattr(layer.self_attn, proj).bias
                assert b is not None and b.abs().max() > 0, f"layer {i} {proj} bias is zero"

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        s.update({"norm_topk_prob": False,
                  "shared_expert_intermediate_size": self.SHARED_I,
                  "shared_expert": "out += sigmoid(x @ shared_expert_gate.weight.T) * "
                                   "shared_expert(x), every sparse layer, every token",
                  "mlp_only_layers": [0], "use_sliding_window": False})
        return s


# ---------------------------------------------------------------------------- Mixtral
class Mixtral(GqaFamily):
    key, name, arch = "mixtral", "tiny-mixtral", "MixtralForCausalLM"
    experts, topk = 8, 2
    moe_layers = [0, 1, 2, 3]
    ROPE_THETA = 1_000_000.0
    MIXTRAL_EPS = 1e-5
    mutations = ["rope_interleaved", "no_renormalize"]

    def __init__(self):
        self.routing = SoftmaxRouting(self.experts, self.topk)

    def published_config(self, vocab, ids):
        # as mistralai/Mixtral-8x7B-v0.1's config.json (transformers 4.x)
        return {
            "architectures": ["MixtralForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "hidden_act": "silu",
            "hidden_size": HIDDEN,
            "initializer_range": 0.02,
            "intermediate_size": MOE_I,
            "max_position_embeddings": MAX_POS,
            "model_type": "mixtral",
            "num_attention_heads": self.heads,
            "num_experts_per_tok": self.topk,
            "num_hidden_layers": LAYERS,
            "num_key_value_heads": self.kv_heads,
            "num_local_experts": self.experts,
            "output_router_logits": False,
            "rms_norm_eps": self.MIXTRAL_EPS,
            "rope_theta": self.ROPE_THETA,
            "router_aux_loss_coef": 0.02,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.36.0",
            "use_cache": True,
            "vocab_size": vocab,
        }

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        exp.update({"head_dim": None, "router_jitter_noise": 0.0})
        return exp

    def mlp_shapes(self, n, p):
        s = {p + "block_sparse_moe.gate.weight": [self.experts, HIDDEN]}
        for j in range(self.experts):
            s.update(self.swiglu_shapes(p + f"block_sparse_moe.experts.{j}.", MOE_I,
                                        names=("w1", "w3", "w2")))
        return s

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        s.update({"routing": "softmax over all experts, top-k, the k weights renormalized to sum 1 "
                             "(always; Mixtral has no norm_topk_prob option)",
                  "expert_tensors": "block_sparse_moe.experts.J.w1 = gate_proj, w3 = up_proj, "
                                    "w2 = down_proj: y = w2(silu(w1 x) * w3 x)",
                  "sliding_window": None, "intermediate_size_is_expert_size": MOE_I})
        return s


# ---------------------------------------------------------------------------- DeepSeek (MLA)
class DeepseekFamily(Family):
    heads = 4
    kv_lora_rank = 32
    qk_nope, qk_rope, v_dim = 16, 8, 12
    q_lora_rank: int | None = None
    n_shared: int
    ROPE_THETA = 10000.0

    @property
    def qk_dim(self):
        return self.qk_nope + self.qk_rope

    def attention_shapes(self, p):
        H = self.heads
        s = {p + "kv_a_proj_with_mqa.weight": [self.kv_lora_rank + self.qk_rope, HIDDEN],
             p + "kv_a_layernorm.weight": [self.kv_lora_rank],
             p + "kv_b_proj.weight": [H * (self.qk_nope + self.v_dim), self.kv_lora_rank],
             p + "o_proj.weight": [HIDDEN, H * self.v_dim]}
        if self.q_lora_rank is None:
            s[p + "q_proj.weight"] = [H * self.qk_dim, HIDDEN]
        else:
            s.update({p + "q_a_proj.weight": [self.q_lora_rank, HIDDEN],
                      p + "q_a_layernorm.weight": [self.q_lora_rank],
                      p + "q_b_proj.weight": [H * self.qk_dim, self.q_lora_rank]})
        return s

    def mlp_shapes(self, n, p):
        if n not in self.moe_layers:
            return self.swiglu_shapes(p + "mlp.", DENSE_I)
        s = {p + "mlp.gate.weight": [self.experts, HIDDEN]}
        s.update(self.swiglu_shapes(p + "mlp.shared_experts.", MOE_I * self.n_shared))
        for j in range(self.experts):
            s.update(self.swiglu_shapes(p + f"mlp.experts.{j}.", MOE_I))
        return s

    def mla_config(self, ids) -> dict:
        return {
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "first_k_dense_replace": 1,
            "hidden_act": "silu",
            "hidden_size": HIDDEN,
            "initializer_range": 0.02,
            "intermediate_size": DENSE_I,
            "kv_lora_rank": self.kv_lora_rank,
            "max_position_embeddings": MAX_POS,
            "moe_intermediate_size": MOE_I,
            "moe_layer_freq": 1,
            "n_routed_experts": self.experts,
            "n_shared_experts": self.n_shared,
            "num_attention_heads": self.heads,
            "num_experts_per_tok": self.topk,
            "num_hidden_layers": LAYERS,
            "num_key_value_heads": self.heads,
            "q_lora_rank": self.q_lora_rank,
            "qk_nope_head_dim": self.qk_nope,
            "qk_rope_head_dim": self.qk_rope,
            "rms_norm_eps": RMS_EPS,
            "rope_theta": self.ROPE_THETA,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "v_head_dim": self.v_dim,
        }

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        # transformers 5 derives these: head_dim is the ROTARY dim (qk_rope_head_dim), not the
        # attention head dim, and qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        exp.update({"head_dim": self.qk_rope, "qk_head_dim": self.qk_dim, "pretraining_tp": 1})
        return exp

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        attn = model.model.layers[0].self_attn
        H, nope, rope, v = self.heads, self.qk_nope, self.qk_rope, self.v_dim
        s.update({
            "num_attention_heads": H, "q_lora_rank": self.q_lora_rank,
            "kv_lora_rank": self.kv_lora_rank, "qk_nope_head_dim": nope, "qk_rope_head_dim": rope,
            "qk_head_dim": nope + rope, "v_head_dim": v, "rope_theta": cfg4["rope_theta"],
            "rope_scaling": cfg4.get("rope_scaling"),
            "softmax_scale_before_mscale": (nope + rope) ** -0.5,
            "q_layout": (f"q = q_proj(x) (or q_b_proj(q_a_layernorm(q_a_proj(x)))), viewed "
                         f"[{H} heads, {nope + rope}]: per head the first {nope} = q_nope, the "
                         f"last {rope} = q_rope"),
            "kv_a_proj_with_mqa_layout": (f"rows [0, {self.kv_lora_rank}) = compressed kv c "
                                          f"(then kv_a_layernorm, eps 1e-6), rows [{self.kv_lora_rank}, "
                                          f"{self.kv_lora_rank + rope}) = k_rope (no norm, one "
                                          f"rotary key shared by all heads)"),
            "kv_b_proj_layout": (f"weight [{H}*({nope}+{v}) = {H * (nope + v)}, {self.kv_lora_rank}]; "
                                 f"head h owns rows [h*{nope + v}, (h+1)*{nope + v}): the first "
                                 f"{nope} rows give k_nope, the next {v} rows give v"),
            "o_proj_input": f"heads concatenated head-major, {H}*{v} = {H * v}",
            "rope_layout": ("interleaved pairs: dims (2i, 2i+1) of q_rope / k_rope rotate together "
                            "by inv_freq[i] (transformers: V2 via complex multiply of adjacent "
                            "pairs, V3 rope_interleave=true; DeepSeek's reference code "
                            "de-interleaves then rotate-half, the same scores)"),
            "attention_scores": "(q_nope.k_nope + q_rope.k_rope) * softmax_scale, causal, softmax in fp32",
            "shared_experts": (f"n_shared_experts {self.n_shared}: one SwiGLU MLP of intermediate "
                               f"{MOE_I}*{self.n_shared} = {MOE_I * self.n_shared}, added unweighted"),
            "first_k_dense_replace": 1,
        })
        assert attn.kv_b_proj.weight.shape[0] == H * (nope + v)
        return s


class DeepseekV2Lite(DeepseekFamily):
    key, name, arch = "deepseek-v2-lite", "tiny-deepseek-v2-lite", "DeepseekV2ForCausalLM"
    experts, topk = 8, 2
    moe_layers = [1, 2, 3]
    q_lora_rank = None
    n_shared = 2
    mutations = ["rope_half", "kv_b_v_first", "norm_topk_prob"]

    def __init__(self):
        self.routing = SoftmaxRouting(self.experts, self.topk)

    def published_config(self, vocab, ids):
        # as deepseek-ai/DeepSeek-V2-Lite's config.json, without auto_map (no remote code here)
        # and with rope_scaling null (V2-Lite itself uses YaRN; tiny-deepseek-v3 covers YaRN)
        c = self.mla_config(ids)
        c.update({
            "architectures": ["DeepseekV2ForCausalLM"],
            "aux_loss_alpha": 0.001,
            "model_type": "deepseek_v2",
            "n_group": 1,
            "norm_topk_prob": False,
            "pretraining_tp": 1,
            "rope_scaling": None,
            "routed_scaling_factor": 1.0,
            "scoring_func": "softmax",
            "seq_aux": True,
            "topk_group": 1,
            "topk_method": "greedy",
            "transformers_version": "4.33.1",
            "vocab_size": vocab,
        })
        return dict(sorted(c.items()))

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        exp["mlp_bias"] = False
        return exp

    def check_loaded(self, model, vname):
        for i, layer in enumerate(model.model.layers):
            is_moe = hasattr(layer.mlp, "gate")
            assert is_moe == (i in self.moe_layers)
            if is_moe:
                assert layer.mlp.gate.topk_method == "greedy"
                assert layer.mlp.gate.routed_scaling_factor == 1.0
            assert layer.self_attn.q_proj is not None and layer.self_attn.q_a_proj is None

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        s.update({"topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": False,
                  "routed_scaling_factor": 1.0,
                  "routing": "softmax over all experts, top-k of the probabilities, weights = the "
                             "k probabilities (not renormalized) * routed_scaling_factor (1.0)",
                  "yarn": None, "softmax_scale": model.model.layers[0].self_attn.scaling})
        return s


class DeepseekV3(DeepseekFamily):
    key, name, arch = "deepseek-v3", "tiny-deepseek-v3", "DeepseekV3ForCausalLM"
    # 16 experts in 4 groups of 4, top-4 within the 2 best groups: with groups of 4 the V3 group
    # score (sum of the top-2) differs from both the group max and the group sum
    experts, topk = 16, 4
    n_group, topk_group = 4, 2
    moe_layers = [1, 2, 3]
    q_lora_rank = 24
    n_shared = 1
    mutations = ["rope_half", "kv_b_v_first", "no_yarn", "no_mscale", "no_bias", "group_max",
                 "weights_from_bias"]
    ROUTED_SCALING = 2.5
    # normal(0, 0.5) leaves 7-12 of 16 experts per layer never selected (a sigmoid score in
    # (0, 1) cannot overcome bias gaps > 1); 0.25 keeps every expert in use while the bias still
    # changes the choice of many tokens (counted in the reference JSON's config_summary)
    BIAS_STD = 0.25
    YARN = {"beta_fast": 32, "beta_slow": 1, "factor": 4, "mscale": 1.0, "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 512, "type": "yarn"}
    tensor_dtypes = {f"model.layers.{n}.mlp.gate.e_score_correction_bias": "F32" for n in (1, 2, 3)}

    def __init__(self):
        self.routing = SigmoidGroupRouting(self.experts, self.topk, self.n_group, self.topk_group)

    def published_config(self, vocab, ids):
        # as deepseek-ai/DeepSeek-V3's config.json, without auto_map and quantization_config,
        # and with no multi-token-prediction layer (num_nextn_predict_layers 0)
        c = self.mla_config(ids)
        c.update({
            "architectures": ["DeepseekV3ForCausalLM"],
            "ep_size": 1,
            "model_type": "deepseek_v3",
            "n_group": self.n_group,
            "norm_topk_prob": True,
            "num_nextn_predict_layers": 0,
            "rope_scaling": dict(self.YARN),
            "routed_scaling_factor": self.ROUTED_SCALING,
            "scoring_func": "sigmoid",
            "topk_group": self.topk_group,
            "topk_method": "noaux_tc",
            "transformers_version": "4.46.3",
            "vocab_size": vocab,
        })
        return dict(sorted(c.items()))

    def cfg5_expected(self, cfg4):
        exp = super().cfg5_expected(cfg4)
        exp["rope_interleave"] = True
        return exp

    def mlp_shapes(self, n, p):
        s = super().mlp_shapes(n, p)
        if n in self.moe_layers:
            s[p + "mlp.gate.e_score_correction_bias"] = [self.experts]
        return s

    def bias_values(self, seed: int) -> dict[int, torch.Tensor]:
        g = torch.Generator().manual_seed(seed + 7)
        # bf16-exact values, stored as F32 (as DeepSeek-V3 stores this tensor)
        return {i: bf16_exact(torch.randn(self.experts, generator=g) * self.BIAS_STD)
                for i in self.moe_layers}

    def prepare_model(self, model, seed):
        self.bias = self.bias_values(seed)
        with torch.no_grad():
            for i in self.moe_layers:
                model.model.layers[i].mlp.gate.e_score_correction_bias.copy_(self.bias[i])

    def before_save(self, model):
        for i in self.moe_layers:
            gate = model.model.layers[i].mlp.gate
            gate.e_score_correction_bias.data = gate.e_score_correction_bias.data.float()
            assert torch.equal(gate.e_score_correction_bias, self.bias[i])

    def check_loaded(self, model, vname):
        for i, layer in enumerate(model.model.layers):
            is_moe = hasattr(layer.mlp, "gate")
            assert is_moe == (i in self.moe_layers)
            if is_moe:
                b = layer.mlp.gate.e_score_correction_bias
                assert torch.equal(b.float(), self.bias[i]), f"layer {i}: e_score_correction_bias not loaded"
                assert b.abs().max() > 0
                assert layer.mlp.gate.routed_scaling_factor == self.ROUTED_SCALING
                assert layer.mlp.gate.norm_topk_prob is True
            assert layer.self_attn.q_a_proj is not None and layer.self_attn.q_proj is None
        assert model.config.rope_interleave is True

    def config_summary(self, model, cfg4):
        s = super().config_summary(model, cfg4)
        y = self.YARN
        m_all = yarn_get_mscale(y["factor"], y["mscale_all_dim"])
        s.update({
            "topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": self.n_group,
            "topk_group": self.topk_group, "norm_topk_prob": True,
            "routed_scaling_factor": self.ROUTED_SCALING,
            "e_score_correction_bias": {str(i): [float(v) for v in self.bias[i]] for i in self.moe_layers},
            "e_score_correction_bias_dtype": "F32 in the checkpoint (all other tensors BF16)",
            "yarn": {
                **{k: v for k, v in y.items() if k != "type"},
                "rotary_dim": self.qk_rope,
                "mscale_all_dim_factor": m_all,
                "softmax_scale_formula": "qk_head_dim**-0.5 * yarn_get_mscale(factor, mscale_all_dim)**2",
                "yarn_get_mscale": "0.1 * m * ln(factor) + 1 (1 if factor <= 1)",
                "cos_sin_factor_formula": "yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)",
                "inv_freq_formula": ("inv_freq[i] = interp[i] * (1 - e[i]) + extrap[i] * e[i], "
                                     "extrap = theta**(-2i/d), interp = extrap / factor, e = 1 - "
                                     "clamp((i - low) / (high - low), 0, 1), low = floor(cd(beta_fast)), "
                                     "high = ceil(cd(beta_slow)), cd(r) = d*ln(orig_max/(2*pi*r))/(2*ln(theta)), "
                                     "clamped to [0, d-1]"),
            },
            "softmax_scale": model.model.layers[0].self_attn.scaling,
        })
        return s


FAMILIES = {f.key: f for f in (Qwen3Moe, Qwen2Moe, Mixtral, DeepseekV2Lite, DeepseekV3)}
NEW_FAMILIES = ["qwen2-moe", "mixtral", "deepseek-v2-lite", "deepseek-v3"]


def copy_tree_with_config(src: Path, dst: Path, config_name: str) -> None:
    """A copy of a model folder whose config.json is src/config_name."""
    shutil.copytree(src, dst)
    shutil.copyfile(src / config_name, dst / "config.json")
