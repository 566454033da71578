"""The KV cache is sized from a budget by default: /metrics and the start-up log state its
capacity in tokens and in concurrent requests of max_model_len, both computed here from the
budget and the model's bytes per token; a --max-model-len the cache cannot hold is refused at
start-up with what would fit."""

from __future__ import annotations

import re
import subprocess

import httpx

from support import (BINARY, DEFAULT_CPU_KVCACHE_SPACE, cpu_kv_cache_capacity, read_metrics,
                     start_server)


def served_max_model_len(url: str) -> int:
    return httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["max_model_len"]


def check_capacity(url: str, log: str, capacity: int, block_size: int, ranks: int = 1) -> None:
    metrics = read_metrics(url)
    max_model_len = served_max_model_len(url)
    assert max_model_len == min(2048, capacity)  # the fixture's max_position_embeddings
    assert metrics["tidal_max_model_len"] == max_model_len
    for rank in range(ranks):
        assert metrics[f'tidal_kv_cache_capacity_tokens{{rank="{rank}"}}'] == capacity
        assert abs(metrics[f'tidal_kv_cache_max_concurrency{{rank="{rank}"}}']
                   - capacity / max_model_len) < 1e-6
    line = re.search(r"KV cache: (\d+) blocks of (\d+) tokens = (\d+) tokens", log)
    assert line, log
    assert (int(line[1]), int(line[2]), int(line[3])) == (capacity // block_size, block_size,
                                                          capacity)


def test_default_cache_is_the_cpu_budget():
    with start_server() as server:
        capacity = cpu_kv_cache_capacity(DEFAULT_CPU_KVCACHE_SPACE)
        check_capacity(server.url, server.log(100_000), capacity, 16)


def test_budget_and_block_size_flags_set_the_capacity():
    # 3 MiB and 8-token blocks: 3072 tokens, more than the model's 2048.
    with start_server("--cpu-kvcache-space", "3MiB", "--block-size", "8") as server:
        check_capacity(server.url, server.log(100_000), cpu_kv_cache_capacity(3 << 20, 8), 8)
    # 1 MiB: 1024 tokens, so max_model_len follows the cache.
    with start_server("--cpu-kvcache-space", str(1 << 20)) as server:
        capacity = cpu_kv_cache_capacity(1 << 20)
        assert capacity < 2048
        check_capacity(server.url, server.log(100_000), capacity, 16)


def test_kv_cache_memory_overrides_the_budget():
    with start_server("--kv-cache-memory", "2MiB", "--cpu-kvcache-space", "1GiB") as server:
        assert read_metrics(server.url)['tidal_kv_cache_capacity_tokens{rank="0"}'] == \
            cpu_kv_cache_capacity(2 << 20)


def refused(*args: str) -> str:
    result = subprocess.run([str(BINARY), "serve", "--port", "0", *args], capture_output=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result.stdout.decode(errors="replace")
    return result.stderr.decode(errors="replace") + result.stdout.decode(errors="replace")


def test_max_model_len_past_the_cache_is_refused_with_what_fits():
    capacity = cpu_kv_cache_capacity(1 << 20)
    message = refused("--cpu-kvcache-space", "1MiB", "--max-model-len", "2048")
    assert f"--max-model-len 2048 does not fit one rank's KV cache of {capacity} tokens" in message
    assert "--cpu-kvcache-space 2097152 (2.0 MiB) would hold it" in message


def test_max_model_len_past_the_cache_is_refused_on_ranks_too():
    capacity = cpu_kv_cache_capacity(1 << 20)
    message = refused("--ranks", "2", "--cpu-kvcache-space", "1MiB", "--max-model-len", "2048")
    assert f"one rank's KV cache of {capacity} tokens" in message
