#!/usr/bin/env python3
"""Expert load balancing under skewed routing: starts `tidal serve --enable-eplb` with dummy
weights and a router biased toward a few experts (the test-only TIDAL_TEST_ROUTER_BIAS), keeps
streaming clients busy, and reports decode throughput and step time before the first rebalance
and after it, with the balancedness (mean rank load / max rank load) the server measured, the
expert bytes moved and the longest pause a rebalance caused.

Standard library only. Prints a table, writes JSON.

  bench/eplb_bench.py --device cuda --config bench/configs/qwen3-30b-a3b.json --num-layers 8 \
      --ranks 4 --out bench/results/eplb.json
  bench/eplb_bench.py --binary build/tidal --device cpu \
      --config tests/fixtures/tiny-qwen3-moe/config.json --ranks 2 --expert-slots 5 \
      --bias 0:6,1:6 --eplb-interval 60 --eplb-window 30 --max-tokens 48 --measure 3
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Clients, Server, add_server_args, finish_report, report  # noqa: E402

SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> name: [(labels, value)]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return samples


def total(samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def largest(samples, name: str) -> float:
    return max((value for _, value in samples.get(name, [])), default=0.0)


def balancedness(samples, when: str) -> float:
    """Mean over layers of the last rebalance's balancedness, `when` before or after it."""
    values = [value for labels, value in samples.get("tidal_eplb_balancedness", [])
              if labels.get("when") == when]
    return sum(values) / len(values) if values else float("nan")


def rank_steps(samples) -> float:
    """Steps of one rank (every rank of a group steps together)."""
    return largest(samples, "tidal_engine_steps_total")


PHASES = ("schedule", "agree", "forward", "prefill", "outputs", "balance")


def phase_seconds(samples) -> dict[str, float]:
    """Step seconds by phase, summed over ranks."""
    totals = dict.fromkeys(PHASES, 0.0)
    for labels, value in samples.get("tidal_step_seconds_total", []):
        if labels.get("phase") in totals:
            totals[labels["phase"]] += value
    return totals


class Window:
    """Server-side counters between two scrapes: steps, tokens, and the step's phases."""

    def __init__(self, samples, ranks: int):
        self.start = time.monotonic()
        self.samples, self.ranks = samples, ranks

    def close(self, samples, client_tokens: int) -> dict:
        seconds = time.monotonic() - self.start
        steps = max(rank_steps(samples) - rank_steps(self.samples), 1)
        before, after = phase_seconds(self.samples), phase_seconds(samples)
        per_step_ms = {phase: 1e3 * (after[phase] - before[phase]) / self.ranks / steps
                       for phase in PHASES}
        return {
            "seconds": seconds,
            "tokens_per_s": client_tokens / seconds,
            "prompt_tokens_per_s": (total(samples, "tidal_prompt_tokens_total")
                                    - total(self.samples, "tidal_prompt_tokens_total")) / seconds,
            "step_ms": 1e3 * seconds / steps,
            "step_phases_ms": per_step_ms,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--expert-slots", type=int, default=0,
                        help="slots per rank (default: ceil(experts / ranks) + 2 spare slots)")
    parser.add_argument("--bias", default=",".join(f"{e}:2" for e in range(8, 16)),
                        help="router logit bias per expert, expert:bias,... (skews routing; the "
                        "default favours experts 8-15, which start together on rank 0 with no "
                        "replica: the start-up spares replicate experts 0, 1, ...)")
    parser.add_argument("--eplb-interval", type=int, default=2000)
    parser.add_argument("--eplb-window", type=int, default=1000)
    parser.add_argument("--eplb-layers-per-step", type=int, default=0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--serve-args", default="",
                        help="more `tidal serve` options, e.g. \"--max-num-batched-tokens 4096\"")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=64,
                        help="prompt length (long prompts make the steps prefill-heavy, where the "
                        "experts' compute, not their weight reads, sets the pace)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of load before measuring (the first rebalance must come "
                        "after it: raise --eplb-interval otherwise)")
    parser.add_argument("--measure", type=float, default=5.0,
                        help="seconds measured after the first rebalance")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the first rebalance")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    config = json.loads(Path(args.config).read_text())
    experts = config.get("num_experts", config.get("num_local_experts"))
    slots = args.expert_slots or -(-experts // args.ranks) + 2
    serve_args = ["--device", args.device, "--ranks", str(args.ranks), "--expert-slots",
                  str(slots), "--enable-eplb", "--eplb-interval", str(args.eplb_interval),
                  "--eplb-window", str(args.eplb_window), "--eplb-layers-per-step",
                  str(args.eplb_layers_per_step), "--max-num-seqs", str(args.clients)]
    if args.num_layers:
        serve_args += ["--num-layers", str(args.num_layers)]
    serve_args += shlex.split(args.serve_args)
    server = Server(args.binary, args.config, serve_args, "tidal-eplb-bench-",
                    env={"TIDAL_TEST_ROUTER_BIAS": args.bias})
    result = {}
    try:
        server.wait_healthy()
        prompt = [100 + i % 1000 for i in range(args.prompt_tokens)]
        clients = Clients(server.port, args.clients, args.max_tokens, prompt)
        clients.start()
        time.sleep(args.settle)
        # Before: from here to the first rebalance.
        start = time.monotonic()
        samples = parse_metrics(server.metrics())
        before = Window(samples, args.ranks)
        if total(samples, "tidal_eplb_rebalances_total") > 0:
            raise RuntimeError("the first rebalance came during --settle: raise --eplb-interval")
        while True:
            samples = parse_metrics(server.metrics())
            if total(samples, "tidal_eplb_rebalances_total") > 0:
                break
            if time.monotonic() - start > args.timeout:
                raise RuntimeError(f"no rebalance within {args.timeout} s")
            time.sleep(0.05)
        rebalanced = time.monotonic()
        phases = {"before": before.close(samples, clients.tokens_between(start, rebalanced))}
        first = samples
        # After: a fresh window once the first rebalance's moves are done.
        time.sleep(0.5)
        after_start = time.monotonic()
        after = Window(parse_metrics(server.metrics()), args.ranks)
        time.sleep(args.measure)
        samples = parse_metrics(server.metrics())
        phases["after"] = after.close(samples,
                                      clients.tokens_between(after_start, time.monotonic()))
        clients.finish()
        result = report(
            server, clients,
            bias=args.bias,
            clients=args.clients,
            prompt_tokens=args.prompt_tokens,
            max_tokens=args.max_tokens,
            phases=phases,
            first_rebalance={
                "balancedness_before": balancedness(first, "before"),
                "balancedness_after": balancedness(first, "after"),
                "bytes_moved": total(first, "tidal_eplb_bytes_moved_total"),
            },
            rebalances=total(samples, "tidal_eplb_rebalances_total") / args.ranks,
            bytes_moved=total(samples, "tidal_eplb_bytes_moved_total"),
            longest_pause_s=largest(samples, "tidal_eplb_longest_pause_seconds"))
    finally:
        server.stop(str(Path(args.out).with_suffix(".serve.log")) if args.out else "")

    first = result["first_rebalance"]
    print(f"\nexpert load balancing on {result['card']}, {result['date']}, {args.ranks} ranks, "
          f"{args.clients} clients, prompts of {args.prompt_tokens} tokens, {args.max_tokens} "
          f"generated, bias {args.bias}, dummy {Path(args.config).name} "
          f"({args.num_layers or 'all'} layers)\n")
    print(f"{'phase':>8} {'seconds':>8} {'tokens/s':>10} {'prompt/s':>10} {'step ms':>8}   "
          + " ".join(f"{name:>8}" for name in PHASES) + "  (ms per step, mean over ranks)")
    for name, phase in result["phases"].items():
        print(f"{name:>8} {phase['seconds']:>8.2f} {phase['tokens_per_s']:>10.1f} "
              f"{phase['prompt_tokens_per_s']:>10.1f} {phase['step_ms']:>8.2f}   "
              + " ".join(f"{phase['step_phases_ms'][p]:>8.2f}" for p in PHASES))
    print(f"\nbalancedness (mean over layers) {first['balancedness_before']:.3f} -> "
          f"{first['balancedness_after']:.3f}; first rebalance moved "
          f"{first['bytes_moved'] / 1e6:.1f} MB; {result['rebalances']:.0f} rebalances moved "
          f"{result['bytes_moved'] / 1e6:.1f} MB in all; longest pause "
          f"{result['longest_pause_s'] * 1e3:.1f} ms")
    return finish_report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
