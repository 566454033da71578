#!/usr/bin/env python3
"""Elastic transitions under load: starts `tidal serve` with dummy weights, keeps streaming
clients busy, scales through a sequence of sizes, and reports per transition the pause in which
no client received a token, the server's own phase timings (prepare, commit pause, weight move
bytes and seconds, warm_and_capture), the total, and the expert-weight bandwidth achieved.

Standard library only (the GPU machine has no package registry). Prints a table, writes JSON.

  bench/elastic_bench.py --device cuda --config bench/configs/qwen3-30b-a3b.json \
      --num-layers 8 --start 2 --sizes 4,2,3,2 --out bench/results/elastic.json
  bench/elastic_bench.py --device cpu --config tests/fixtures/tiny-qwen3-moe/config.json \
      --start 2 --sizes 4,2 --expert-slots 4       # a dry run on any machine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (Clients, Server, add_server_args, finish_report, http_json,  # noqa: E402
                         report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--start", type=int, default=2)
    parser.add_argument("--sizes", default="4,2,3,2",
                        help="the targets, in order; N-a.b removes ranks a and b (e.g. 2-0)")
    parser.add_argument("--expert-slots", type=int, default=0,
                        help="slots per rank (default: ceil(experts / smallest size))")
    parser.add_argument("--max-ranks", type=int, default=0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds of load before and between transitions")
    parser.add_argument("--nvlink-gbps", type=float, default=0.0,
                        help="measured NVLink GB/s (tidal bench --ranks 2) for the move ratio")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    steps = []  # (target, ranks to remove or None)
    for step in args.sizes.split(","):
        target, _, removed = step.partition("-")
        steps.append((int(target), [int(r) for r in removed.split(".")] if removed else None))
    sizes = [target for target, _ in steps]

    config = json.loads(Path(args.config).read_text())
    experts = config.get("num_experts", config.get("num_local_experts"))
    slots = args.expert_slots or -(-experts // min([args.start, *sizes]))
    serve_args = ["--device", args.device, "--ranks", str(args.start), "--enable-elastic-ep",
                  "--expert-slots", str(slots), "--max-num-seqs", str(max(args.clients, 16))]
    if args.num_layers:
        serve_args += ["--num-layers", str(args.num_layers)]
    if args.max_ranks:
        serve_args += ["--max-ranks", str(args.max_ranks)]
    server = Server(args.binary, args.config, serve_args, "tidal-elastic-bench-")
    port = server.port
    rows, result = [], {}
    try:
        server.wait_healthy()
        clients = Clients(port, args.clients, args.max_tokens, list(range(100, 228)))
        clients.start()
        time.sleep(args.settle)
        for target, removed in steps:
            _, before = http_json(port, "GET", "/v1/admin/topology")
            started = time.monotonic()
            request = {"ranks": target}
            if removed is not None:
                request["remove_ranks"] = removed
            status, operation = http_json(port, "POST", "/v1/admin/scale", request)
            if status >= 400:
                raise RuntimeError(f"scale to {target}: HTTP {status}: {operation}")
            while operation["phase"] not in ("done", "failed"):
                time.sleep(0.01)
                _, operation = http_json(port, "GET", f"/v1/admin/scale/{operation['id']}")
            ended = time.monotonic()
            if operation["result"] != "ok":
                raise RuntimeError(f"scale to {target} failed: {operation['error']}")
            time.sleep(args.settle)
            timings = operation["timings"]
            moved = timings["weight_move_bytes"]
            move_s = timings["weight_move_seconds"]
            row = {
                "transition": f"{before['num_ranks']}->{target}"
                + (f" (-{','.join(map(str, removed))})" if removed else ""),
                "no_token_gap_s": clients.longest_gap(started, ended + 0.5),
                "prepare_s": timings["prepare_seconds"],
                "commit_pause_s": timings["pause_seconds"],
                "warm_and_capture_s": timings["warm_and_capture_seconds"],
                "total_s": timings["total_seconds"],
                "bytes_moved": moved,
                "move_s": move_s,
                "move_gbps": moved / move_s / 1e9 if move_s > 0 and moved > 0 else 0.0,
                "requests_migrated": operation["requests_migrated"],
                "tokens_per_s_after": clients.tokens_between(ended, ended + args.settle)
                / args.settle,
            }
            if args.nvlink_gbps > 0:
                row["move_vs_nvlink"] = row["move_gbps"] / args.nvlink_gbps
            rows.append(row)
            print(json.dumps(row), flush=True)
        clients.finish()
        result = report(server, clients, clients=args.clients, transitions=rows)
    finally:
        server.stop(str(Path(args.out).with_suffix(".serve.log")) if args.out else "")

    header = (f"{'transition':>14} {'no-token gap s':>14} {'prepare s':>9} {'pause s':>8} "
              f"{'capture s':>9} {'total s':>8} {'moved MB':>9} {'GB/s':>6} {'migrated':>8}")
    print(f"\nelastic transitions on {result['card']}, {result['date']}, {args.clients} clients, "
          f"dummy {Path(args.config).name} ({args.num_layers or 'all'} layers)\n")
    print(header)
    for row in rows:
        print(f"{row['transition']:>14} {row['no_token_gap_s']:>14.3f} {row['prepare_s']:>9.3f} "
              f"{row['commit_pause_s']:>8.3f} {row['warm_and_capture_s']:>9.3f} "
              f"{row['total_s']:>8.3f} {row['bytes_moved'] / 1e6:>9.1f} {row['move_gbps']:>6.1f} "
              f"{row['requests_migrated']:>8}")
    print()
    return finish_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
