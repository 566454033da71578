#!/usr/bin/env python3
"""Served throughput with default flags: starts `tidal serve` with dummy weights and nothing but
the model's flags (the KV cache, batch limits and graphs all at their defaults), then, for each
client count, streams greedy completions from that many clients and reports the served output
tokens/s in steady state, the time to first token (p50/p99), the batch the server ran, the KV
cache's capacity line from the log, and the ratio to `tidal bench`'s decode rate at that batch
(its served-step column, from --bench-json) when given.

Standard library only (the GPU machine has no package registry). Prints a table, writes JSON.

  bench/throughput_bench.py --device cuda --config bench/configs/qwen3-30b-a3b.json \
      --num-layers 48 --clients 64,256,512 --bench-json bench_tidal.json --out throughput.json
  bench/throughput_bench.py --device cpu --config tests/fixtures/tiny-qwen3-moe/config.json \
      --clients 4,8 --max-tokens 32 --measure 2      # a dry run on any machine
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Clients, Server, add_server_args, finish_report, report  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metric_values(text: str, name: str) -> list[float]:
    return [float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]


def bench_rate(bench: dict, batch: int) -> tuple[int, float] | None:
    """tidal bench's served decode tokens/s at the largest measured batch <= `batch`."""
    rows = bench.get("decode_served", {}).get("decode", []) or bench.get("decode", [])
    rows = [row for row in rows if row["batch"] <= batch]
    if not rows:
        return None
    row = max(rows, key=lambda r: r["batch"])
    return row["batch"], row["tokens_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--clients", default="64,256,512")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds before measuring (default: until every client has its "
                             "first token, then one request's length more)")
    parser.add_argument("--measure", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--bench-json", default="", help="tidal bench's JSON, for the ratio")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    bench = json.loads(Path(args.bench_json).read_text()) if args.bench_json else {}

    serve_args = ["--device", args.device]
    if args.num_layers:
        serve_args += ["--num-layers", str(args.num_layers)]
    server = Server(args.binary, args.config, serve_args, "tidal-throughput-bench-")
    rows, failures, finished = [], [], 0
    result = {}
    try:
        server.wait_healthy()
        capacity_lines = sorted({m.group(0) for m in re.finditer(
            r"KV cache: [^\n]*", server.log_path.read_text(errors="replace"))})
        for count in counts:
            prompt = [100 + (i % 1000) for i in range(args.prompt_tokens)]
            clients = Clients(server.port, count, args.max_tokens, prompt)
            started = time.monotonic()
            clients.start()
            if args.warmup > 0:
                time.sleep(args.warmup)
            else:
                # Every client has had its first token, so the batch is as full as it gets.
                deadline = started + 600
                while time.monotonic() < deadline:
                    with clients.lock:
                        if len(clients.ttfts) >= count:
                            break
                    time.sleep(0.1)
            begin = time.monotonic()
            running = []
            while time.monotonic() < begin + args.measure:
                time.sleep(0.5)
                running.append(sum(metric_values(server.metrics(), "tidal_num_requests_running")))
            end = time.monotonic()
            clients.finish()
            served = clients.tokens_between(begin, end) / (end - begin)
            ttfts = [seconds for _, seconds in clients.ttfts]
            batch = round(sum(running) / max(len(running), 1))
            row = {
                "clients": count,
                "served_output_tokens_per_s": served,
                "ttft_p50_s": percentile(ttfts, 0.5),
                "ttft_p99_s": percentile(ttfts, 0.99),
                "mean_running": sum(running) / max(len(running), 1),
                "requests_finished": clients.finished,
            }
            reference = bench_rate(bench, batch) if bench else None
            if reference:
                row["bench_batch"], row["bench_tokens_per_s"] = reference
                row["served_vs_bench"] = served / reference[1]
            rows.append(row)
            failures += clients.failures
            finished += clients.finished
            print(json.dumps(row), flush=True)
        metrics = server.metrics()
        result = report(server, SimpleNamespace(finished=finished, failures=failures),
                        prompt_tokens=args.prompt_tokens,
                        max_tokens=args.max_tokens, measure_s=args.measure,
                        kv_cache=capacity_lines,
                        kv_capacity_tokens=metric_values(metrics, "tidal_kv_cache_capacity_tokens"),
                        max_model_len=metric_values(metrics, "tidal_max_model_len"),
                        runs=rows)
    finally:
        server.stop(str(Path(args.out).with_suffix(".serve.log")) if args.out else "")

    print(f"\nserved throughput with default flags on {result['card']}, {result['date']}, dummy "
          f"{Path(args.config).name} ({args.num_layers or 'all'} layers), prompts of "
          f"{args.prompt_tokens} tokens, {args.max_tokens} output tokens, greedy")
    for line in result["kv_cache"]:
        print(f"  {line}")
    print(f"\n{'clients':>8} {'running':>8} {'tokens/s':>10} {'TTFT p50 s':>10} "
          f"{'TTFT p99 s':>10} {'bench batch':>11} {'bench tok/s':>11} {'ratio':>6}")
    for row in rows:
        print(f"{row['clients']:>8} {row['mean_running']:>8.1f} "
              f"{row['served_output_tokens_per_s']:>10.1f} {row['ttft_p50_s']:>10.3f} "
              f"{row['ttft_p99_s']:>10.3f} {row.get('bench_batch', '-'):>11} "
              f"{row.get('bench_tokens_per_s', float('nan')):>11.1f} "
              f"{row.get('served_vs_bench', float('nan')):>6.3f}")
    print()
    return finish_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
