"""Every model family through an elastic 2->3->2 under streaming traffic, on CPU rank processes:
the checks of test_elastic_scaling.py's transitions (every request finishes with the
transformers reference's greedy tokens, the reference prompts at every stage, one warm-up per
rank per transition), on each family's own fixture. DeepSeek's latent KV cache, its shared
experts (replicated, never moved) and its grouped routing cross the transitions with the
requests handed between ranks. The FP8 fixtures move their experts as stored, e4m3 values with
their block scales."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import SOURCE_DIR, start_server, wait_for  # noqa: E402
from test_elastic_scaling import (  # noqa: E402
    NUM_CLIENTS, TIMEOUT_S, Traffic, check_reference_prompts, checked_transition)

FIXTURES = SOURCE_DIR / "tests" / "fixtures"


@pytest.mark.parametrize("family", [
    "tiny-qwen2-moe", "tiny-mixtral", "tiny-deepseek-v2-lite", "tiny-deepseek-v3",
    # FP8 checkpoints: the expert moves carry the e4m3 weights with their block scales.
    "tiny-qwen3-moe-fp8", "tiny-deepseek-v3-fp8"])
def test_family_scales_2_3_2_under_traffic(family):
    model_dir = FIXTURES / family
    config = json.loads((model_dir / "config.json").read_text())
    experts = next(config[key] for key in ("n_routed_experts", "num_experts", "num_local_experts")
                   if key in config)
    prompts = json.loads((FIXTURES / f"{family}.reference.json").read_text())[
        "variants"]["default"]["prompts"]
    # Two ranks hold every expert once; three hold some twice.
    slots = (experts + 1) // 2
    with start_server("--model", str(model_dir), "--served-model-name", family, "--ranks", "2",
                      "--expert-slots", str(slots),
                      "--elastic", "--max-num-seqs", "16") as server:
        check_reference_prompts(server.url, prompts, family)
        with Traffic(server.url, prompts=prompts, model=family) as traffic:
            wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
            operations = [checked_transition(server.url, traffic, size) for size in (3, 2)]
        traffic.check()
        assert operations[-1]["epoch_after"] == 2
        assert operations[-1]["requests_migrated"] > 0, (
            "no request was in flight on the leaving rank: nothing was tested")
        server.assert_alive()
