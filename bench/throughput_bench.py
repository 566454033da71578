#!/usr/bin/env python3
"""Served throughput with default flags: starts `tidal serve` with dummy weights and nothing but
the model's flags (the KV cache, batch limits and graphs all at their defaults), then, for each
client count, streams completions from that many clients and reports the served output
tokens/s in steady state, the time to first token (p50/p99), the batch the server ran, and the KV
cache's capacity line from the log. Then, with the server stopped, `tidal bench` measures the
engine's decode (its served-step column: inputs up, graph replayed, tokens down) at each batch
the server ran and at the clients' mean context (prompt + half the output), and the table gives
the served rate's ratio to it.

Each request has its own random prompt and samples at temperature 1 with its own seed, so the
batch's tokens differ as tidal bench's random tokens do and touch as many experts. (Identical
greedy streams would all route each step to the same 8 of 128 experts and read a sixteenth of the
expert weights: on dummy weights that served 2.6x tidal bench's rate at batch 64.)

Standard library only (the GPU machine has no package registry). Prints a table, writes JSON.

  bench/throughput_bench.py --device cuda --config bench/configs/qwen3-30b-a3b.json \
      --num-layers 48 --clients 64,256,512 --out throughput.json
  bench/throughput_bench.py --device cpu --config tests/fixtures/tiny-qwen3-moe/config.json \
      --clients 4,8 --max-tokens 32 --measure 2      # a dry run on any machine
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
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


def prefill_seconds(text: str) -> float:
    """Seconds the ranks' steps with prompt tokens took (tidal_step_seconds_total, phase prefill),
    averaged over the ranks."""
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("tidal_step_seconds_total{") and 'phase="prefill"' in line]
    return sum(values) / max(len(values), 1)


def engine_rates(args, batches: list[int], context: int, workdir: Path) -> dict[int, float]:
    """tidal bench's served-step decode tokens/s at each batch, on the same card and model."""
    out = workdir / "engine_bench.json"
    command = [args.binary, "bench", "--device", args.device, "--load-format", "dummy",
               "--config", args.config, "--batch-sizes", ",".join(map(str, batches)),
               "--context", str(context), "--prefill-tokens", "0", "--iterations", "20",
               # Only the decode rate is compared: small ceiling measurements save the time.
               "--copy-mib", "256", "--matmul-size", "1024", "--json", str(out)]
    if args.num_layers:
        command += ["--num-layers", str(args.num_layers)]
    print("$", " ".join(command), flush=True)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"tidal bench failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    bench = json.loads(out.read_text())
    # The served-step rows where the backend has them (graphs), else the plain decode rows.
    rows = (bench.get("decode_served") or {}).get("decode") or bench["decode"]
    return {row["batch"]: row["tokens_per_s"] for row in rows}


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
    parser.add_argument("--no-engine-bench", action="store_true",
                        help="skip the tidal bench comparison")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

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
        # Ordinary text ids: below the model's vocabulary and Qwen3's special tokens (151643 on).
        vocab_size = json.loads(Path(args.config).read_text())["vocab_size"]
        text_ids_below = min(vocab_size, 151643)
        for count in counts:
            prompt = [100 + (i % 1000) for i in range(args.prompt_tokens)]
            clients = Clients(server.port, count, args.max_tokens, prompt,
                              random_ids_below=text_ids_below)
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
            prefill_before = prefill_seconds(server.metrics())
            begin = time.monotonic()
            running = []
            while time.monotonic() < begin + args.measure:
                time.sleep(0.5)
                running.append(sum(metric_values(server.metrics(), "tidal_num_requests_running")))
            end = time.monotonic()
            prefill = prefill_seconds(server.metrics()) - prefill_before
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
                # The share of the window spent in steps with prompt tokens: time tidal bench's
                # decode-only rate does not include.
                "prefill_share": min(prefill / (end - begin), 1.0),
            }
            row["batch"] = batch
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
    # The engine alone at the batches the server ran, on the card the server has let go of.
    context = args.prompt_tokens + args.max_tokens // 2
    if not args.no_engine_bench:
        rates = engine_rates(args, sorted({row["batch"] for row in rows if row["batch"] > 0}),
                             context, server.workdir)
        for row in rows:
            if row["batch"] in rates:
                row["engine_context"] = context
                row["engine_tokens_per_s"] = rates[row["batch"]]
                row["served_vs_engine"] = row["served_output_tokens_per_s"] / rates[row["batch"]]
                row["served_outside_prefill_vs_engine"] = row["served_vs_engine"] / max(
                    1.0 - row["prefill_share"], 1e-9)

    print(f"\nserved throughput with default flags on {result['card']}, {result['date']}, dummy "
          f"{Path(args.config).name} ({args.num_layers or 'all'} layers), prompts of "
          f"{args.prompt_tokens} tokens, {args.max_tokens} output tokens, random prompts sampled "
          f"at temperature 1")
    for line in result["kv_cache"]:
        print(f"  {line}")
    print(f"\n{'clients':>8} {'running':>8} {'tokens/s':>10} {'TTFT p50 s':>10} "
          f"{'TTFT p99 s':>10} {'batch':>6} {'engine tok/s':>12} {'ratio':>6} {'prefill':>8} "
          f"{'ratio outside prefill':>21}")
    for row in rows:
        print(f"{row['clients']:>8} {row['mean_running']:>8.1f} "
              f"{row['served_output_tokens_per_s']:>10.1f} {row['ttft_p50_s']:>10.3f} "
              f"{row['ttft_p99_s']:>10.3f} {row['batch']:>6} "
              f"{row.get('engine_tokens_per_s', float('nan')):>12.1f} "
              f"{row.get('served_vs_engine', float('nan')):>6.3f} "
              f"{100 * row['prefill_share']:>7.1f}% "
              f"{row.get('served_outside_prefill_vs_engine', float('nan')):>21.3f}")
    if not args.no_engine_bench:
        print(f"(engine: tidal bench's served-step decode at the batch the server ran, context "
              f"{context}, the clients' mean; prefill: the share of the window in steps with prompt "
              f"tokens, which that decode-only rate leaves out)")
    print()
    return finish_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
