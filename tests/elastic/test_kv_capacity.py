"""Every rank's KV cache is sized the same way, a scale-up's joining ranks included: after
2 -> 3 ranks, /metrics reports the same capacity on every rank, the one the CPU budget and the
model's bytes per token give."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import (DEFAULT_CPU_KVCACHE_SPACE, MODEL, cpu_kv_bytes_per_token,  # noqa: E402
                     cpu_kv_cache_capacity, read_metrics, start_server, wait_for)

SCALE_TIMEOUT_S = 60


def drive(url: str) -> None:
    """One greedy request of 130 steps: every rank steps with the group (an idle one with padding
    only), and a rank reports its load at least every 64 steps, so all of them have reported
    after it. (Rank processes report their load after steps, not at start-up.)"""
    response = httpx.post(url + "/v1/completions", timeout=60,
                          json={"model": MODEL, "prompt": "The tide", "max_tokens": 130,
                                "temperature": 0, "ignore_eos": True})
    assert response.status_code == 200, response.text


def reported_capacities(url: str, ranks: int) -> dict[int, float]:
    def all_reported():
        drive(url)
        found = capacities(url)
        return found if len(found) == ranks and all(found.values()) else None

    return wait_for(all_reported, SCALE_TIMEOUT_S, interval_s=0.5,
                    what=f"{ranks} ranks reporting a KV cache")


def capacities(url: str) -> dict[int, float]:
    metrics = read_metrics(url)
    found = {}
    for name, value in metrics.items():
        if name.startswith('tidal_kv_cache_capacity_tokens{rank="'):
            found[int(name.split('"')[1])] = value
    return found


def scale(url: str, ranks: int) -> dict:
    response = httpx.post(url + "/v1/admin/scale", json={"ranks": ranks}, timeout=10)
    assert response.status_code in (200, 202), response.text
    operation_id = response.json()["id"]

    def finished():
        operation = httpx.get(f"{url}/v1/admin/scale/{operation_id}", timeout=10).json()
        return operation if operation["phase"] in ("done", "failed") else None

    return wait_for(finished, SCALE_TIMEOUT_S, what=f"scale to {ranks}")


def test_joining_rank_reports_the_same_capacity():
    expected = cpu_kv_cache_capacity(DEFAULT_CPU_KVCACHE_SPACE)
    with start_server("--ranks", "2", "--expert-slots", "4") as server:
        assert reported_capacities(server.url, 2) == {0: expected, 1: expected}
        operation = scale(server.url, 3)
        assert operation["result"] == "ok", operation
        assert reported_capacities(server.url, 3) == {0: expected, 1: expected, 2: expected}
        # And the scaled group still serves a request of the longest length on every rank.
        models = httpx.get(server.url + "/v1/models", timeout=10).json()
        assert models["data"][0]["max_model_len"] == min(2048, expected)


def test_joining_rank_sized_by_a_smaller_budget():
    budget = 3 << 20
    expected = cpu_kv_cache_capacity(budget)
    with start_server("--ranks", "2", "--expert-slots", "4", "--cpu-kvcache-space",
                      str(budget)) as server:
        operation = scale(server.url, 3)
        assert operation["result"] == "ok", operation
        assert reported_capacities(server.url, 3) == {0: expected, 1: expected, 2: expected}


def test_caches_cut_from_device_memory_match_across_a_scale_up(monkeypatch):
    """--cpu-kvcache-space 0 sizes as on a GPU: each rank's cache is what
    --gpu-memory-utilization of its device leaves after the weights, the worst-case step, a
    transition's standby communicator (512 MiB) and the exchange buffers of --max-ranks (8).
    TIDAL_TEST_CPU_MEMORY_LIMIT makes every rank's CPU backend a device of 1 GiB. A rank that
    joins takes the group's block count and allocates it as it joins (before the commit point),
    and the group's cache must sit within what its device allows."""
    limit = 1 << 30
    monkeypatch.setenv("TIDAL_TEST_CPU_MEMORY_LIMIT", str(limit))
    bytes_per_token = cpu_kv_bytes_per_token()
    allowed = int(0.9 * limit) - (512 << 20)  # before the weights, the step and the growth
    # The step of 512 tokens keeps the worst case within the bound below (the server's default
    # of 2048 takes about 120 MiB more of f32 activations on the CPU backend).
    with start_server("--ranks", "2", "--expert-slots", "4", "--cpu-kvcache-space", "0",
                      "--gpu-memory-utilization", "0.9", "--max-num-batched-tokens",
                      "512") as server:
        assert "from --gpu-memory-utilization 0.9 of 1.00 GiB" in server.log(100_000)
        before = reported_capacities(server.url, 2)
        operation = scale(server.url, 3)
        assert operation["result"] == "ok", operation
        after = reported_capacities(server.url, 3)
    assert after[0] == before[0] and after[1] == before[1]
    for rank, tokens in after.items():
        used = tokens * bytes_per_token
        # Less than what utilization allows after the reserve, by no more than the weights, the
        # step and the exchange buffers of 8 ranks take (tens of MiB for the tiny model).
        assert allowed - (64 << 20) < used <= allowed, (rank, tokens)
    assert max(after.values()) - min(after.values()) <= 16, after
    print(f"device-memory capacities: {after} tokens; at most {allowed // bytes_per_token}")
