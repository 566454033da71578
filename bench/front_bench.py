#!/usr/bin/env python3
"""The HTTP front under thousands of concurrent streams: starts `tidal serve` on the CPU tiny
model with room for every stream in the batch, opens N streaming completions at once (asyncio,
raw sockets, every event read), probes /health every 50 ms from a process of its own while they
run, and reports the
server's threads, its resident memory (idle and at the peak: the difference is what the open
streams cost), /health latency p50/p99/max and the streams' TTFT p50/p99. Each stream count runs
on a fresh server.

Standard library only. Prints a table, writes JSON.

  bench/front_bench.py --streams 500,5000 --out bench/results/front.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import REPO, free_port  # noqa: E402

MODEL = "tiny-qwen3-moe"


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def request_bytes(max_tokens: int) -> bytes:
    body = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": max_tokens,
                       "ignore_eos": True, "stream": True}).encode()
    return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def stream(port: int, raw: bytes, ttfts: list, failures: list, started: asyncio.Event,
                 counts: list) -> None:
    try:
        sent = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        counts[0] += 1
        if counts[0] == counts[1]:
            started.set()
        first = True
        while True:
            line = await reader.readline()
            if not line:
                raise RuntimeError("closed before [DONE]")
            if b"data: [DONE]" in line:
                break
            if first and b'"text"' in line:
                ttfts.append(time.monotonic() - sent)
                first = False
        writer.close()
    except Exception as error:  # noqa: BLE001: every failure is reported
        failures.append(f"{type(error).__name__}: {error}")


def probe_health(port: int, out: str) -> int:
    """The prober's own process (--probe-health): GET /health every 50 ms over a new connection
    until SIGTERM, one latency per line in `out`. Apart from the clients' event loop, so a busy
    client does not count as a slow server."""
    import signal
    import socket
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with open(out, "w") as latencies:
        while not stop:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(raw)
                while sock.recv(4096):
                    pass
            latencies.write(f"{time.monotonic() - started}\n")
            latencies.flush()
            time.sleep(0.05)
    return 0


async def run_load(port: int, pid: int, streams: int, max_tokens: int) -> dict:
    raw = request_bytes(max_tokens)
    ttfts, failures = [], []
    started = asyncio.Event()
    counts = [0, streams]
    idle = proc_status(pid)
    health_file = Path(f"/tmp/tidal-front-bench-health-{streams}.txt")
    prober = subprocess.Popen([sys.executable, __file__, "--probe-health", str(port),
                               "--probe-out", str(health_file)])
    began = time.monotonic()
    tasks = [asyncio.create_task(stream(port, raw, ttfts, failures, started, counts))
             for _ in range(streams)]
    peak = dict(idle)
    while not all(task.done() for task in tasks):
        status = proc_status(pid)
        peak = {k: max(peak[k], status[k]) for k in peak}
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - began
    prober.terminate()
    prober.wait(timeout=30)
    health = [float(line) for line in health_file.read_text().split()]
    return {"streams": streams, "max_tokens": max_tokens, "failures": len(failures),
            "failure_samples": failures[:5], "seconds": elapsed,
            "threads_idle": idle["Threads"], "threads_peak": peak["Threads"],
            "rss_idle_mib": idle["VmRSS"] / 1024, "rss_peak_mib": peak["VmRSS"] / 1024,
            "health_probes": len(health), "health_p50_ms": 1e3 * percentile(health, 0.5),
            "health_p99_ms": 1e3 * percentile(health, 0.99),
            "health_max_ms": 1e3 * max(health, default=float("nan")),
            "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p99_s": percentile(ttfts, 0.99)}


def serve(binary: str, streams: int, max_tokens: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    # The KV cache holds every stream whole (the tiny model's cache is 1 KiB per token).
    cache_mib = max(512, (streams * (max_tokens + 16) + 1023) // 1024 + 64)
    command = [binary, "serve", "--port", str(port), "--max-num-seqs", str(streams + 16),
               "--max-num-batched-tokens", str(max(4096, 2 * streams)), "--max-model-len", "1024",
               "--cpu-kvcache-space", f"{cache_mib}MiB",
               "--max-connections", str(streams + 1024)]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"tidal serve did not start:\n{log.read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(REPO / "build" / "tidal"))
    parser.add_argument("--streams", default="500,5000")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", default="")
    parser.add_argument("--probe-health", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_health:
        return probe_health(args.probe_health, args.probe_out)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for streams in [int(s) for s in args.streams.split(",")]:
        log = Path(f"/tmp/tidal-front-bench-{streams}.log")
        process, port = serve(args.binary, streams, args.max_tokens, log)
        try:
            rows.append(asyncio.run(run_load(port, process.pid, streams, args.max_tokens)))
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores"
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "runs": rows}
    print(f"\nthe front under concurrent streams ({machine}, {result['date']}), CPU tiny model, "
          f"{args.max_tokens} tokens per stream, every stream in the batch\n")
    print(f"{'streams':>8} {'failed':>7} {'threads':>8} {'RSS idle MiB':>13} {'RSS peak MiB':>13} "
          f"{'health p50 ms':>14} {'p99 ms':>8} {'max ms':>8} {'TTFT p50 s':>11} {'p99 s':>7}")
    for row in rows:
        print(f"{row['streams']:>8} {row['failures']:>7} {row['threads_peak']:>8} "
              f"{row['rss_idle_mib']:>13.0f} {row['rss_peak_mib']:>13.0f} "
              f"{row['health_p50_ms']:>14.1f} {row['health_p99_ms']:>8.1f} "
              f"{row['health_max_ms']:>8.1f} {row['ttft_p50_s']:>11.3f} {row['ttft_p99_s']:>7.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 1 if any(row["failures"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
