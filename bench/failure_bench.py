#!/usr/bin/env python3
"""A rank's death under load: starts `tidal serve` with dummy weights on several ranks, keeps
streaming clients busy, `kill -9`s one rank mid-decode, and reports the detection seconds (kill to
the front's detection), the pause (the longest interval in which no client received a token), the
recovery (detection to serving again, the server's record), the expert bytes read back from the
checkpoint (the rest survive as replicas and cost nothing), whether a replacement joined, and the
requests lost (must be 0). Then it waits for `replace` to bring the group back to its size.

Standard library only (the GPU machine has no package registry). Prints a table, writes JSON.

  bench/failure_bench.py --device cuda --config bench/configs/qwen3-30b-a3b.json \
      --num-layers 48 --ranks 4 --expert-slots 64 --out bench/results/failure.json
  bench/failure_bench.py --device cpu --config tests/fixtures/tiny-qwen3-moe/config.json \
      --ranks 3 --expert-slots 4      # a dry run on any machine
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (Clients, Server, add_server_args, finish_report, http_json,  # noqa: E402
                         report)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"{what}: not within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--expert-slots", type=int, required=True,
                        help="slots per rank: ranks x slots >= 2 x experts gives every expert a "
                             "surviving replica; fewer means a reload from the checkpoint")
    parser.add_argument("--kill-rank", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds of load before the kill and after the recovery")
    parser.add_argument("--label", default="", help="a name for this run in the report")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    serve_args = ["--device", args.device, "--ranks", str(args.ranks), "--expert-slots",
                  str(args.expert_slots), "--max-num-seqs", str(max(args.clients, 16)),
                  "--on-rank-failure", "replace"]
    if args.num_layers:
        serve_args += ["--num-layers", str(args.num_layers)]
    server = Server(args.binary, args.config, serve_args, "tidal-failure-bench-")
    port = server.port
    result, row = {}, {}
    try:
        server.wait_healthy()
        clients = Clients(port, args.clients, args.max_tokens, list(range(100, 228)))
        clients.start()
        time.sleep(args.settle)
        _, before = http_json(port, "GET", "/v1/admin/topology")
        victim = before["ranks"][args.kill_rank]
        killed_at, killed_unix = time.monotonic(), time.time()
        os.kill(victim["pid"], signal.SIGKILL)

        def recovery():
            _, topology = http_json(port, "GET", "/v1/admin/topology")
            if topology["last_recovery"] is None:
                return None
            _, record = http_json(port, "GET", f"/v1/admin/scale/{topology['last_recovery']}")
            return record if record["phase"] in ("done", "failed") else None

        record = wait_until(recovery, 300, "the recovery")
        recovered_at = time.monotonic()
        if record["result"] != "ok":
            raise RuntimeError(f"recovery failed: {record['error']}")
        # `replace` then scales back up (unless a replacement already joined the recovery).
        back = wait_until(
            lambda: (lambda t: t if t["num_ranks"] == args.ranks and t["scaling"] is None
                     and not t["recovering"] else None)(http_json(port, "GET",
                                                                  "/v1/admin/topology")[1]),
            600, "the group back at its size")
        back_at = time.monotonic()
        time.sleep(args.settle)
        clients.finish()
        config = json.loads(Path(args.config).read_text())
        experts = config.get("num_experts", config.get("num_local_experts"))
        replaced_in_recovery = record["target_ranks"] == args.ranks
        row = {
            "label": args.label or f"{args.ranks} ranks x {args.expert_slots} slots",
            "replicas_per_expert": args.ranks * args.expert_slots / experts,
            "killed": f"rank {args.kill_rank} ({victim['device']})",
            "detection_s": record["detected_at_unix"] - killed_unix,
            "no_token_gap_s": clients.longest_gap(killed_at - 0.5, recovered_at + 1.0),
            "recovery_s": record["timings"]["total_seconds"],
            "warm_and_capture_s": record["timings"]["warm_and_capture_seconds"],
            "experts_reloaded": record["experts_reloaded"],
            "bytes_reloaded_by_survivors": record["timings"]["weight_move_bytes"],
            "reload_s": record["timings"]["weight_move_seconds"],
            "replacement_in_recovery": replaced_in_recovery,
            "ranks_after_recovery": record["target_ranks"],
            "back_to_size_s": back_at - killed_at,
            "requests_recovered": record["requests_recovered"],
            "cause": record["cause"],
            "ranks_after": back["num_ranks"],
        }
        result = report(server, clients, clients=args.clients, failure=row)
    finally:
        server.stop(str(Path(args.out).with_suffix(".serve.log")) if args.out else "")

    print(f"\nrank failure on {result['card']}, {result['date']}, {args.clients} clients, dummy "
          f"{Path(args.config).name} ({args.num_layers or 'all'} layers), {row['label']}\n")
    for key in ("replicas_per_expert", "killed", "detection_s", "no_token_gap_s", "recovery_s",
                "warm_and_capture_s", "experts_reloaded", "bytes_reloaded_by_survivors",
                "reload_s", "replacement_in_recovery", "ranks_after_recovery", "back_to_size_s",
                "requests_recovered"):
        value = row[key]
        print(f"  {key:>28}  {value:.3f}" if isinstance(value, float) else
              f"  {key:>28}  {value}")
    print(f"  {'requests lost':>28}  {result['num_request_failures']}")
    print()
    return finish_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
