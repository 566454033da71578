"""Serving over several rank processes: many concurrent requests spread over the ranks, ranks
with very different loads, and one rank alone with work all finish normally, with the same
greedy tokens as one rank. Every request has a timeout, so a hang fails instead of blocking."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import MODEL, REFERENCE_FILE, start_server  # noqa: E402

TIMEOUT_S = 120


def reference_prompts() -> list[dict]:
    return json.loads(REFERENCE_FILE.read_text())["variants"]["default"]["prompts"]


def rank_metric(metrics: str, name: str) -> dict[int, float]:
    values = {}
    for match in re.finditer(rf'^{name}{{rank="(\d+)"}} (\S+)$', metrics, re.MULTILINE):
        values[int(match.group(1))] = float(match.group(2))
    return values


async def complete(client: openai.AsyncOpenAI, prompt, max_tokens: int):
    return await client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0,
        extra_body={"ignore_eos": True, "return_token_ids": True})


def test_200_concurrent_requests_over_4_ranks():
    prompts = reference_prompts()
    with start_server("--ranks", "4", "--max-num-seqs", "32") as server:
        async def run():
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                          max_retries=0, timeout=TIMEOUT_S) as client:
                jobs = [complete(client, prompts[i % len(prompts)]["prompt_token_ids"],
                                 8 + (i % 5) * 4) for i in range(200)]
                return await asyncio.gather(*jobs)
        results = asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
        assert len(results) == 200
        for i, result in enumerate(results):
            choice = result.choices[0]
            assert choice.finish_reason == "length", (i, choice.finish_reason)
            expected = prompts[i % len(prompts)]["greedy_token_ids"][: 8 + (i % 5) * 4]
            assert choice.token_ids == expected, f"request {i}: not the reference's greedy tokens"
        metrics = __import__("httpx").get(server.url + "/metrics", timeout=10).text
        steps = rank_metric(metrics, "tidal_engine_steps_total")
        assert sorted(steps) == [0, 1, 2, 3], metrics[:2000]
        # Every rank of a group spends some of each step agreeing with the others.
        for rank in range(4):
            agree = re.search(rf'^tidal_step_seconds_total{{rank="{rank}",phase="agree"}} (\S+)$',
                              metrics, re.M)
            assert agree and float(agree.group(1)) > 0, rank
        server.assert_alive()


def test_very_different_loads_and_a_lone_rank():
    prompts = reference_prompts()
    with start_server("--ranks", "3") as server:
        async def run():
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                          max_retries=0, timeout=TIMEOUT_S) as client:
                # One request alone: only one rank has work, the others step with none.
                lone = await complete(client, prompts[1]["prompt_token_ids"], 32)
                # One long request beside many short ones: the ranks' batches differ widely.
                jobs = [complete(client, prompts[1]["prompt_token_ids"], 200)]
                jobs += [complete(client, prompts[0]["prompt_token_ids"], 4) for _ in range(30)]
                return lone, await asyncio.gather(*jobs)
        lone, mixed = asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
        assert lone.choices[0].token_ids == prompts[1]["greedy_token_ids"]
        assert mixed[0].choices[0].finish_reason == "length"
        assert len(mixed[0].choices[0].token_ids) == 200
        assert mixed[0].choices[0].token_ids[:32] == prompts[1]["greedy_token_ids"]
        for result in mixed[1:]:
            assert result.choices[0].token_ids == prompts[0]["greedy_token_ids"][:4]
        server.assert_alive()
