"""Expert load balancing over rank processes, with routing skewed by the test-only router bias:
a rebalance raises balancedness, requests streaming across rebalances finish normally, and greedy
tokens equal those of the same biased model without balancing. Every request has a timeout."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import MODEL, REFERENCE_FILE, extra, start_server  # noqa: E402

TIMEOUT_S = 180
# Strong enough that experts 0 and 1 win top-2 for nearly every token in every MoE layer.
BIAS = "0:8,1:8"
MAX_TOKENS = 48


def reference_prompts() -> list[dict]:
    return json.loads(REFERENCE_FILE.read_text())["variants"]["default"]["prompts"]


async def stream(client: openai.AsyncOpenAI, prompt) -> tuple[list[int], str | None]:
    """Streams one greedy completion; returns its token ids and finish reason."""
    tokens: list[int] = []
    finish = None
    response = await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        extra_body={"ignore_eos": True, "return_token_ids": True})
    async for chunk in response:
        choice = chunk.choices[0]
        tokens += extra(choice, "token_ids") or []
        finish = choice.finish_reason or finish
    return tokens, finish


def run_streams(server, prompts) -> list[tuple[list[int], str | None]]:
    async def run():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                      max_retries=0, timeout=TIMEOUT_S) as client:
            return await asyncio.gather(*[stream(client, p) for p in prompts])
    return asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))


def metric_values(metrics: str, name: str) -> dict[str, float]:
    return {match.group(1): float(match.group(2))
            for match in re.finditer(rf"^{name}{{(.*)}} (\S+)$", metrics, re.MULTILINE)}


# 0: every layer moves in one pause; 1: one MoE layer per step, the others serving on their old
# placement meanwhile (the fixture has 3 MoE layers).
@pytest.mark.parametrize("layers_per_step", [0, 1])
def test_rebalancing_balances_and_keeps_greedy_tokens(monkeypatch, layers_per_step):
    monkeypatch.setenv("TIDAL_TEST_ROUTER_BIAS", BIAS)
    prompts = [p["prompt_token_ids"] for p in reference_prompts()]
    prompts = (prompts * 3)[:6]
    with start_server("--ranks", "3") as server:
        baseline = run_streams(server, prompts)
        server.assert_alive()
    with start_server("--ranks", "3", "--enable-eplb", "--eplb-interval", "8",
                      "--eplb-window", "64", "--eplb-layers-per-step",
                      str(layers_per_step)) as server:
        balanced = run_streams(server, prompts)
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        log = server.log(200000)
        server.assert_alive()

    # Requests in flight across several rebalances all complete, with identical tokens.
    for i, ((tokens, finish), (expected, _)) in enumerate(zip(balanced, baseline)):
        assert finish == "length", (i, finish)
        assert len(tokens) == MAX_TOKENS, i
        assert tokens == expected, f"request {i}: tokens changed with rebalancing"

    rebalances = metric_values(metrics, "tidal_eplb_rebalances_total")
    assert sorted(rebalances) == ['rank="0"', 'rank="1"', 'rank="2"'], metrics[-3000:]
    assert all(count >= 1 for count in rebalances.values()), rebalances
    assert sum(metric_values(metrics, "tidal_eplb_bytes_moved_total").values()) > 0
    assert max(metric_values(metrics, "tidal_eplb_longest_pause_seconds").values()) > 0

    # The first rebalance starts from the initial placement and must improve it; later ones
    # (the load is stable) keep a placement at least as balanced.
    lines = re.findall(r"eplb: rebalance 1 at step \d+: balancedness \(mean over \d+ layers\) "
                       r"(\S+) -> (\S+);", log)
    assert lines, log[-4000:]
    before, after = (float(v) for v in lines[0])
    assert after > before, lines[0]
    balancedness = metric_values(metrics, "tidal_eplb_balancedness")
    layers = {key.split(",")[0] for key in balancedness}
    assert layers, metrics[-3000:]
    for layer in layers:
        assert (balancedness[f'{layer},when="after"'] >=
                balancedness[f'{layer},when="before"'] - 1e-9), balancedness


def test_a_transition_plans_for_the_measured_load(monkeypatch):
    """Scaling plans with the ranks' measured expert load (the same planner as rebalancing):
    at 3 ranks x 5 slots (15 slots, 8 experts, 7 spares) the two hot experts get a replica on
    every rank, where uniform load would give them 2 like five others. Streams in flight across
    the transition finish with the tokens of the same biased model served without balancing."""
    monkeypatch.setenv("TIDAL_TEST_ROUTER_BIAS", BIAS)
    prompts = [p["prompt_token_ids"] for p in reference_prompts()][:4]
    with start_server("--ranks", "2", "--expert-slots", "5") as server:
        baseline = run_streams(server, prompts)
    # Balancing on, but its periodic rebalance far away: only the transition re-places.
    with start_server("--ranks", "2", "--expert-slots", "5", "--enable-eplb",
                      "--eplb-interval", "1000000", "--eplb-window", "256") as server:
        warm = run_streams(server, prompts)  # fills the load window
        assert [tokens for tokens, _ in warm] == [tokens for tokens, _ in baseline]

        async def streams_across_scale():
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                          max_retries=0, timeout=TIMEOUT_S) as client:
                jobs = [asyncio.create_task(stream(client, p)) for p in prompts]
                await asyncio.sleep(0.05)
                async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
                    response = await http.post(server.url + "/scale_elastic_ep",
                                               json={"new_data_parallel_size": 3})
                return response, await asyncio.gather(*jobs)

        response, during = asyncio.run(asyncio.wait_for(streams_across_scale(), TIMEOUT_S))
        assert response.status_code == 200, response.text
        for (tokens, finish), (expected, _) in zip(during, baseline):
            assert finish == "length" and tokens == expected
        topology = httpx.get(server.url + "/v1/admin/topology", timeout=10).json()
        assert topology["num_ranks"] == 3
        for layer, counts in enumerate(topology["placement"]["replicas"]):
            assert counts[0] == 3 and counts[1] == 3, (layer, counts)
        assert [tokens for tokens, _ in run_streams(server, prompts)] == [
            tokens for tokens, _ in baseline]
        server.assert_alive()
