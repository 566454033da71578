"""Independent fp32 forward passes for the fixture families, written from the published math
(Qwen's and Mistral's modeling code, DeepSeek's own reference code for MLA, YaRN and the
routers), reading only config.json (published style) and the safetensors shards. It checks
that the files alone, not transformers' internals, determine the reference outputs, and it is
where the DeepSeek conventions are pinned down independently of transformers:

- RoPE on q_rope / k_rope as DeepSeek's reference code does it: de-interleave
  (x.view(d/2, 2).transpose -> [x0, x2, ..., x1, x3, ...]) then rotate-half;
- YaRN inv_freq / cos-sin factor / softmax-scale mscale from DeepSeek's yarn_* functions;
- noaux_tc routing as DeepSeek-V3's inference/model.py (groups masked to -inf).

For noaux_tc it also counts (self.diverging) how many (token, layer) expert choices would
differ under plausible wrong rules (no bias, no group limit, group score = max or sum of the
group) -- evidence that the fixture tells them apart -- and under the 0.0 group masking of
the modeling_deepseek.py published with the DeepSeek-V3 weights (instead of -inf).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

F = torch.nn.functional


# deliberate mistakes an implementation could make (verify() reports how far each moves the
# reference logprobs and how many greedy steps it changes)
MUTATIONS = {
    "rope_interleaved": "GQA: RoPE on interleaved pairs instead of rotate-half",
    "no_qkv_bias": "Qwen2: q/k/v biases dropped",
    "ungated_shared_expert": "Qwen2: shared expert added without its sigmoid gate",
    "no_renormalize": "Mixtral: top-k softmax weights not renormalized",
    "rope_half": "MLA: rotate-half on q_rope/k_rope as stored (no de-interleave)",
    "kv_b_v_first": "MLA: kv_b_proj rows per head taken as [v, k_nope] instead of [k_nope, v]",
    "no_yarn": "MLA: plain RoPE and softmax scale, rope_scaling ignored",
    "no_mscale": "MLA: YaRN inv_freq but softmax scale without mscale(factor, mscale_all_dim)^2",
    "no_bias": "noaux_tc: e_score_correction_bias ignored",
    "group_max": "noaux_tc: group score = max instead of sum of the top 2",
    "weights_from_bias": "noaux_tc: weights from sigmoid + bias instead of sigmoid",
    "norm_topk_prob": "V2 greedy: top-k weights renormalized (norm_topk_prob is false)",
}


def yarn_find_correction_dim(num_rotations, dim, base, max_position_embeddings):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_linear_ramp_mask(lo, hi, dim):
    if lo == hi:
        hi += 0.001
    return torch.clamp((torch.arange(dim, dtype=torch.float32) - lo) / (hi - lo), 0, 1)


class PlainForward:
    def __init__(self, model_dir: Path, overrides: dict | None = None, mutations=()):
        """mutations: deliberate mistakes (MUTATIONS) to measure how the references react."""
        unknown = set(mutations) - set(MUTATIONS)
        if unknown:
            raise ValueError(f"unknown mutations {unknown}")
        self.mut = set(mutations)
        self.c = json.loads((model_dir / "config.json").read_text())
        self.c.update(overrides or {})
        index = json.loads((model_dir / "model.safetensors.index.json").read_text())
        self.w = {}
        for shard in sorted(set(index["weight_map"].values())):
            with safe_open(str(model_dir / shard), "pt") as f:
                for k in f.keys():
                    self.w[k] = f.get_tensor(k).float()
        self.mt = self.c["model_type"]
        self.diverging = {}  # alternative routing rule -> (token, layer) choices that differ
        self.routed_choices = 0

    # ------------------------------------------------------------------ pieces
    def rms(self, x, w, eps=None):
        eps = self.c["rms_norm_eps"] if eps is None else eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def swiglu(self, x, p, names=("gate_proj", "up_proj", "down_proj")):
        g, u, d = (self.w[p + n + ".weight"] for n in names)
        return (F.silu(x @ g.T) * (x @ u.T)) @ d.T

    @staticmethod
    def rotate_half_rope(x, cos, sin):  # x [T, heads, d]; cos/sin [T, d] (= cat(freqs, freqs))
        d = x.shape[-1]
        rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
        return x * cos[:, None] + rot * sin[:, None]

    @staticmethod
    def interleaved_rope(x, cos, sin):  # pairs (2i, 2i+1) rotated by freq i
        d = x.shape[-1]
        c, s = cos[:, None, : d // 2], sin[:, None, : d // 2]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).reshape(x.shape)

    def cos_sin(self, inv_freq, T, factor=1.0):
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat([ang, ang], -1)
        return emb.cos() * factor, emb.sin() * factor

    # ------------------------------------------------------------------ GQA attention
    def gqa(self, h, p, T):
        c, w = self.c, self.w
        H, KV = c["num_attention_heads"], c["num_key_value_heads"]
        D = c.get("head_dim") or c["hidden_size"] // H
        q, k, v = (h @ w[p + f"{n}_proj.weight"].T for n in "qkv")
        if p + "q_proj.bias" in w and "no_qkv_bias" not in self.mut:
            q, k, v = q + w[p + "q_proj.bias"], k + w[p + "k_proj.bias"], v + w[p + "v_proj.bias"]
        q, k, v = q.view(T, H, D), k.view(T, KV, D), v.view(T, KV, D)
        if p + "q_norm.weight" in w:
            q, k = self.rms(q, w[p + "q_norm.weight"]), self.rms(k, w[p + "k_norm.weight"])
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        cos, sin = self.cos_sin(inv, T)
        if "rope_interleaved" in self.mut:
            q, k = self.interleaved_rope(q, cos, sin), self.interleaved_rope(k, cos, sin)
        else:
            q, k = self.rotate_half_rope(q, cos, sin), self.rotate_half_rope(k, cos, sin)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D) + self.mask
        o = torch.einsum("hts,shd->thd", torch.softmax(att, -1), v).reshape(T, H * D)
        return o @ w[p + "o_proj.weight"].T

    # ------------------------------------------------------------------ MLA (DeepSeek)
    def mla_rope(self):
        """inv_freq, cos/sin factor, softmax scale, as DeepSeek's reference code."""
        c = self.c
        d, base = c["qk_rope_head_dim"], c["rope_theta"]
        q_head_dim = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        scale = q_head_dim ** -0.5
        rs = c.get("rope_scaling")
        freq_extra = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        if not rs or "no_yarn" in self.mut:
            return freq_extra, 1.0, scale
        assert rs["type"] == "yarn", rs
        f = rs["factor"]
        freq_inter = 1.0 / (f * base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        lo, hi = yarn_find_correction_range(rs.get("beta_fast", 32), rs.get("beta_slow", 1), d, base,
                                            rs["original_max_position_embeddings"])
        inv_freq_mask = 1.0 - yarn_linear_ramp_mask(lo, hi, d // 2)
        inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
        m = yarn_get_mscale(f, rs.get("mscale", 1)) / yarn_get_mscale(f, rs.get("mscale_all_dim", 0))
        if rs.get("mscale_all_dim", 0) and "no_mscale" not in self.mut:
            ms = yarn_get_mscale(f, rs["mscale_all_dim"])
            scale = scale * ms * ms
        return inv_freq, m, scale

    def mla(self, h, p, T):
        c, w = self.c, self.w
        H, nope, rope, vd = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                             c["v_head_dim"])
        R = c["kv_lora_rank"]
        if c.get("q_lora_rank") is None:
            q = h @ w[p + "q_proj.weight"].T
        else:
            qa = self.rms(h @ w[p + "q_a_proj.weight"].T, w[p + "q_a_layernorm.weight"], 1e-6)
            q = qa @ w[p + "q_b_proj.weight"].T
        q = q.view(T, H, nope + rope)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        ckv = h @ w[p + "kv_a_proj_with_mqa.weight"].T
        c_kv, k_pe = ckv[:, :R], ckv[:, R:].view(T, 1, rope)
        kv = (self.rms(c_kv, w[p + "kv_a_layernorm.weight"], 1e-6) @ w[p + "kv_b_proj.weight"].T)
        kv = kv.view(T, H, nope + vd)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        if "kv_b_v_first" in self.mut:
            v, k_nope = kv[..., :vd], kv[..., vd:]

        inv_freq, m, scale = self.mla_rope()
        cos, sin = self.cos_sin(inv_freq, T, m)

        def deinterleave(x):  # [T, h, d] -> [x0, x2, ..., x1, x3, ...]
            if "rope_half" in self.mut:
                return x
            return x.reshape(*x.shape[:-1], rope // 2, 2).transpose(-1, -2).reshape(x.shape)

        q_pe = self.rotate_half_rope(deinterleave(q_pe), cos, sin)
        k_pe = self.rotate_half_rope(deinterleave(k_pe), cos, sin)
        att = (torch.einsum("thd,shd->hts", q_nope, k_nope)
               + torch.einsum("thd,sd->hts", q_pe, k_pe[:, 0])) * scale + self.mask
        o = torch.einsum("hts,shd->thd", torch.softmax(att, -1), v).reshape(T, H * vd)
        return o @ w[p + "o_proj.weight"].T

    # ------------------------------------------------------------------ MoE
    def experts_sum(self, h, p, idx, wts, names=("gate_proj", "up_proj", "down_proj")):
        out = torch.zeros_like(h)
        for t in range(h.shape[0]):
            for j in range(idx.shape[1]):
                out[t] += wts[t, j] * self.swiglu(h[t], p + f"{int(idx[t, j])}.", names)
        return out

    def moe(self, h, p, n):
        c, w, mt = self.c, self.w, self.mt
        if mt in ("qwen3_moe", "qwen2_moe"):
            probs = torch.softmax(h @ w[p + "mlp.gate.weight"].T, -1)
            topv, topi = torch.topk(probs, c["num_experts_per_tok"], -1)
            if c["norm_topk_prob"]:
                topv = topv / topv.sum(-1, keepdim=True)
            out = self.experts_sum(h, p + "mlp.experts.", topi, topv)
            if mt == "qwen2_moe":
                gate = torch.sigmoid(h @ w[p + "mlp.shared_expert_gate.weight"].T)
                if "ungated_shared_expert" in self.mut:
                    gate = torch.ones_like(gate)
                out = out + gate * self.swiglu(h, p + "mlp.shared_expert.")
            return out
        if mt == "mixtral":
            probs = torch.softmax(h @ w[p + "block_sparse_moe.gate.weight"].T, -1)
            topv, topi = torch.topk(probs, c["num_experts_per_tok"], -1)
            if "no_renormalize" not in self.mut:
                topv = topv / topv.sum(-1, keepdim=True)
            return self.experts_sum(h, p + "block_sparse_moe.experts.", topi, topv, ("w1", "w3", "w2"))
        # DeepSeek MoEGate
        logits = h @ w[p + "mlp.gate.weight"].T
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        scores = torch.softmax(logits, -1) if c["scoring_func"] == "softmax" else torch.sigmoid(logits)
        if c["topk_method"] == "greedy":
            topv, topi = torch.topk(scores, K, -1)
        elif c["topk_method"] == "noaux_tc":
            choice = scores + w[p + "mlp.gate.e_score_correction_bias"]
            if "no_bias" in self.mut:
                choice = scores
            G = c["n_group"]
            gs = choice.view(-1, G, E // G).topk(2, dim=-1).values.sum(-1)
            if "group_max" in self.mut:
                gs = choice.view(-1, G, E // G).max(-1).values
            gidx = gs.topk(c["topk_group"], dim=-1).indices
            gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
            emask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E).bool()
            topi = choice.masked_fill(~emask, float("-inf")).topk(K, dim=-1).indices
            self.count_alternatives(topi, {
                "groups masked to 0.0 instead of -inf": choice.masked_fill(~emask, 0.0),
                "no e_score_correction_bias": self.group_limited(scores, "top2"),
                "no group limit": choice,
                "group score = max of the group": self.group_limited(choice, "max"),
                "group score = sum of the whole group": self.group_limited(choice, "sum"),
            })
            topv = scores.gather(1, topi)
        else:
            raise SystemExit(f"topk_method {c['topk_method']} not implemented here")
        if "weights_from_bias" in self.mut:
            topv = choice.gather(1, topi)
        if K > 1 and (c["norm_topk_prob"] or "norm_topk_prob" in self.mut):
            topv = topv / (topv.sum(-1, keepdim=True) + 1e-20)
            if c["topk_method"] == "noaux_tc":  # V3 scales after normalizing, V2 only when not
                topv = topv * c["routed_scaling_factor"]
        else:
            topv = topv * c["routed_scaling_factor"]
        out = self.experts_sum(h, p + "mlp.experts.", topi, topv)
        return out + self.swiglu(h, p + "mlp.shared_experts.")

    def group_limited(self, choice, rule):
        """choice scores with the non-selected groups at -inf, group score by `rule`."""
        c = self.c
        E, G = c["n_routed_experts"], c["n_group"]
        v = choice.view(-1, G, E // G)
        gs = {"top2": v.topk(2, dim=-1).values.sum(-1), "max": v.max(-1).values, "sum": v.sum(-1)}[rule]
        gmask = torch.zeros_like(gs).scatter_(1, gs.topk(c["topk_group"], dim=-1).indices, 1.0)
        emask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E).bool()
        return choice.masked_fill(~emask, float("-inf"))

    def count_alternatives(self, topi, alternatives: dict):
        """How many (token, layer) expert sets would differ under each alternative rule."""
        K = topi.shape[1]
        chosen = [set(r) for r in topi.tolist()]
        for name, alt in alternatives.items():
            other = [set(r) for r in alt.topk(K, dim=-1).indices.tolist()]
            self.diverging[name] = self.diverging.get(name, 0) + sum(a != b for a, b in zip(chosen, other))
        self.routed_choices += len(chosen)

    def is_moe_layer(self, n):
        c, mt = self.c, self.mt
        if mt in ("qwen3_moe", "qwen2_moe"):
            return n not in c.get("mlp_only_layers", []) and (n + 1) % c["decoder_sparse_step"] == 0
        if mt == "mixtral":
            return True
        return n >= c["first_k_dense_replace"] and n % c.get("moe_layer_freq", 1) == 0

    # ------------------------------------------------------------------ model
    @torch.no_grad()
    def logits(self, ids: list[int]) -> torch.Tensor:
        c, w = self.c, self.w
        T = len(ids)
        self.mask = torch.full((T, T), float("-inf")).triu(1)
        x = w["model.embed_tokens.weight"][torch.tensor(ids)]
        mla = self.mt.startswith("deepseek")
        for n in range(c["num_hidden_layers"]):
            p = f"model.layers.{n}."
            h = self.rms(x, w[p + "input_layernorm.weight"])
            x = x + (self.mla(h, p + "self_attn.", T) if mla else self.gqa(h, p + "self_attn.", T))
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            x = x + (self.moe(h, p, n) if self.is_moe_layer(n) else self.swiglu(h, p + "mlp."))
        return self.rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T
