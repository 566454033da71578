#!/usr/bin/env python3
"""Build the tiny FP8 block-quantized fixtures from the bf16 ones, and their references.

  tiny-qwen3-moe-fp8     from tiny-qwen3-moe: Qwen's config style (modules_to_not_convert
                         listed), blocks of [16, 24] (several per matrix, partial ones at the
                         right edge), scales stored as BF16
  tiny-deepseek-v3-fp8   from tiny-deepseek-v3: DeepSeek's config style (fmt, no module list),
                         blocks of [128, 128] as published (one partial block per matrix here),
                         scales stored as F32

Every projection (attention, dense MLP, shared and routed experts) becomes float8_e4m3fn with a
scale per block named <weight>_scale_inv, as DeepSeek-V3 and Qwen3-*-FP8 ship them: scale =
amax(block) / 448 rounded to the scale's dtype, value = clamp(w / scale, +-448) rounded to e4m3.
Embeddings, norms, routers and lm_head stay as they were (bf16).

The reference is transformers' fp32 run of the dequantized weights (fp8 value times scale, in
fp32, which is what an engine that dequantizes computes): greedy decodes and top-5 logprobs of
the source fixture's default prompts, with the margins of tools/make_fixture.py (top-1/top-2
logit gap, router gaps) checked on each. A prompt that misses a margin is left out and
reported; the script fails if more than two are.

Usage: /opt/fixenv/bin/python tools/make_fp8_fixture.py [--out-dir DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_families as fam  # noqa: E402
import make_fixture as mf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
FP8_MAX = 448.0
PROJECTION = re.compile(r"\.(q_proj|k_proj|v_proj|o_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|"
                        r"kv_b_proj|gate_proj|up_proj|down_proj)\.weight$")
COPIED = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "LICENSE")
MAX_LEFT_OUT = 2

VARIANTS = {
    "tiny-qwen3-moe-fp8": {
        "source": "tiny-qwen3-moe", "family": "qwen3-moe", "block": [16, 24],
        "scale_dtype": torch.bfloat16, "style": "qwen"},
    "tiny-deepseek-v3-fp8": {
        "source": "tiny-deepseek-v3", "family": "deepseek-v3", "block": [128, 128],
        "scale_dtype": torch.float32, "style": "deepseek"},
}


def quantize(weight: torch.Tensor, block: list[int], scale_dtype) -> tuple[torch.Tensor, ...]:
    """(fp8 values, stored scales, dequantized fp32) of one [rows, cols] weight."""
    rows, cols = weight.shape
    block_rows, block_cols = block
    row_blocks, col_blocks = math.ceil(rows / block_rows), math.ceil(cols / block_cols)
    padded = torch.zeros(row_blocks * block_rows, col_blocks * block_cols)
    padded[:rows, :cols] = weight.float()
    blocks = padded.view(row_blocks, block_rows, col_blocks, block_cols)
    amax = blocks.abs().amax(dim=(1, 3))
    scales = (amax / FP8_MAX).clamp(min=1e-12).to(scale_dtype)
    expanded = scales.float()[:, None, :, None]
    values = (blocks / expanded).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    dequantized = (values.float() * expanded).reshape(padded.shape)[:rows, :cols].contiguous()
    values = values.reshape(padded.shape)[:rows, :cols].contiguous()
    return values, scales, dequantized


def quantization_config(variant: dict, tensors: dict) -> dict:
    config = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
              "weight_block_size": variant["block"]}
    if variant["style"] == "qwen":
        # As Qwen3-*-FP8 list them: every module left in the model's dtype.
        kept = sorted({name.rsplit(".", 1)[0] for name in tensors
                       if name.endswith(".weight") and not PROJECTION.search(name)})
        config = {"activation_scheme": "dynamic", "modules_to_not_convert": kept,
                  "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": variant["block"]}
    return config


def load_source(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def references(family, model_dir: Path, source_ref: dict) -> tuple[list, list, float, dict]:
    model = mf.load_fp32(model_dir)
    probe = mf.RouterProbe(family, model)
    kept, left_out = [], []
    min_logit_gap, router_gaps = math.inf, {k: math.inf for k in family.routing.gap_kinds}
    with torch.no_grad():
        for prompt in source_ref["variants"]["default"]["prompts"]:
            result = mf.greedy_reference(model, probe, prompt["prompt_token_ids"])
            gaps_ok = all(g > mf.ROUTER_GAP_MIN for g in result["router_gaps"].values())
            if result["min_logit_gap"] <= mf.LOGIT_GAP_MIN or not gaps_ok:
                left_out.append({"text": prompt["text"][:40],
                                 "min_logit_gap": result["min_logit_gap"],
                                 "router_gaps": result["router_gaps"]})
                continue
            min_logit_gap = min(min_logit_gap, result["min_logit_gap"])
            for kind, gap in result["router_gaps"].items():
                router_gaps[kind] = min(router_gaps[kind], gap)
            kept.append({"text": prompt["text"], "prompt_token_ids": prompt["prompt_token_ids"],
                         "greedy_token_ids": result["greedy_token_ids"],
                         "top_logprobs": result["top_logprobs"]})
    probe.remove()
    return kept, left_out, min_logit_gap, router_gaps


def build(name: str, variant: dict, out_root: Path) -> None:
    source = FIXTURES / variant["source"]
    family = fam.FAMILIES[variant["family"]]()
    tensors = load_source(source)
    stored, dequantized = {}, {}
    for tensor_name, tensor in tensors.items():
        if PROJECTION.search(tensor_name) and tensor.dim() == 2:
            values, scales, restored = quantize(tensor, variant["block"], variant["scale_dtype"])
            stored[tensor_name] = values
            stored[tensor_name + "_scale_inv"] = scales
            dequantized[tensor_name] = restored
        else:
            stored[tensor_name] = tensor
            dequantized[tensor_name] = tensor
    config = json.loads((source / "config.json").read_text())

    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    save_file(stored, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    fp8_config = dict(config)
    fp8_config["quantization_config"] = quantization_config(variant, tensors)
    (out_dir / "config.json").write_text(json.dumps(fp8_config, indent=2) + "\n")
    for file in COPIED:
        shutil.copyfile(source / file, out_dir / file)

    # The reference: the same model with the dequantized weights, unquantized, in fp32.
    with tempfile.TemporaryDirectory() as stage:
        stage_dir = Path(stage)
        save_file(dequantized, str(stage_dir / "model.safetensors"), metadata={"format": "pt"})
        for file in ("config.json", "generation_config.json"):
            shutil.copyfile(source / file, stage_dir / file)
        source_ref = json.loads((FIXTURES / f"{variant['source']}.reference.json").read_text())
        kept, left_out, min_logit_gap, router_gaps = references(family, stage_dir, source_ref)
    for item in left_out:
        print(f"  {name}: left out {item['text']!r} (logit gap {item['min_logit_gap']:.3g}, "
              f"router gaps {item['router_gaps']})")
    if len(left_out) > MAX_LEFT_OUT:
        raise SystemExit(f"{name}: {len(left_out)} prompts miss a margin")
    reference = {
        "model_dir": name, "dtype_compute": "float32",
        "weights": "FP8 e4m3 dequantized in fp32 (value times block scale)",
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "min_logit_gap": min_logit_gap, "router_gaps": router_gaps,
        "variants": {"default": {"prompts": kept}}}
    (out_root / f"{name}.reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"{name}: {len(kept)} prompts, min logit gap {min_logit_gap:.3g}, router gaps "
          f"{router_gaps}, {size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=FIXTURES)
    parser.add_argument("--only", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    for name in args.only:
        build(name, VARIANTS[name], args.out_dir)


if __name__ == "__main__":
    main()
