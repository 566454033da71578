"""Every rank's KV cache is sized the same way, a scale-up's joining ranks included: after
2 -> 3 ranks, /metrics reports the same capacity on every rank, the one the CPU budget and the
model's bytes per token give."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import (DEFAULT_CPU_KVCACHE_SPACE, MODEL, cpu_kv_cache_capacity,  # noqa: E402
                     read_metrics, start_server, wait_for)

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
