"""What the serving benchmarks share: a `tidal serve` of dummy weights started and stopped,
streaming clients that time every token, small HTTP helpers and the card's name. Standard library
only (the GPU machine has no package registry)."""

from __future__ import annotations

import datetime
import http.client
import json
import lzma
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(port: int, method: str, path: str, body: dict | None = None, timeout: float = 30):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request(method, path, json.dumps(body) if body is not None else None,
                       {"content-type": "application/json"})
    response = connection.getresponse()
    data = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, data


class Clients:
    """Streaming completion clients; every received token's arrival time is recorded.

    By default every request sends `prompt_ids` greedily, so all sequences in a batch are the same
    tokens and route to the same experts. `random_ids_below=N` gives each request its own prompt
    of that length, ids drawn from [100, N), and samples at temperature 1 with its own seed: the
    batch's tokens then differ as the random tokens of `tidal bench` do, and touch as many
    experts."""

    def __init__(self, port: int, count: int, max_tokens: int, prompt_ids: list[int],
                 random_ids_below: int = 0):
        self.port, self.max_tokens, self.prompt_ids = port, max_tokens, prompt_ids
        self.random_ids_below = random_ids_below
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.token_times: list[float] = []
        self.ttfts: list[tuple[float, float]] = []  # (when the first token came, seconds to it)
        self.finished = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.loop, args=(index,), daemon=True)
                        for index in range(count)]

    def body(self, draw: random.Random) -> str:
        request = {"model": "bench", "prompt": self.prompt_ids, "max_tokens": self.max_tokens,
                   "temperature": 0, "stream": True, "ignore_eos": True}
        if self.random_ids_below:
            request["prompt"] = [draw.randrange(100, self.random_ids_below)
                                 for _ in self.prompt_ids]
            request["temperature"] = 1.0
            request["seed"] = draw.randrange(2**31)
        return json.dumps(request)

    def loop(self, index: int) -> None:
        draw = random.Random(index)
        while not self.stop.is_set():
            body = self.body(draw)
            try:
                sent = time.monotonic()
                first = None
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                connection.request("POST", "/v1/completions", body,
                                   {"content-type": "application/json"})
                response = connection.getresponse()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
                finish = None
                for line in response:
                    if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    now = time.monotonic()
                    for choice in chunk.get("choices", []):
                        finish = choice.get("finish_reason") or finish
                        if choice.get("text") is not None:
                            with self.lock:
                                self.token_times.append(now)
                                if first is None:
                                    first = now
                                    self.ttfts.append((now, now - sent))
                connection.close()
                if finish != "length":
                    raise RuntimeError(f"finish_reason {finish!r}")
                with self.lock:
                    self.finished += 1
            except Exception as error:  # noqa: BLE001: every failure is reported
                with self.lock:
                    self.failures.append(f"{type(error).__name__}: {error}")
                time.sleep(0.1)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=600)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest interval within [start, end] in which no client received a token."""
        with self.lock:
            times = sorted(t for t in self.token_times if start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in zip(edges, edges[1:]))

    def tokens_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.token_times if start <= t <= end)


def add_server_args(parser) -> None:
    """The options every serving benchmark takes for the server it starts."""
    parser.add_argument("--binary", default=str(REPO / "build" / "tidal"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=str(REPO / "bench" / "configs" / "qwen3-30b-a3b.json"))
    parser.add_argument("--num-layers", type=int, default=0)


def card() -> str:
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        names = []
    names = [name.strip() for name in names if name.strip()]
    if not names:
        return "no GPU (" + os.uname().machine + " CPU)"
    return f"{len(names)}x {names[0]}" if len(set(names)) == 1 else ", ".join(names)



def report(server: "Server", load: Clients, **fields) -> dict:
    """A serving benchmark's JSON report: the card, the date, the exact commands, the outcome of
    the requests `load` sent, and the benchmark's own `fields`."""
    return {
        "card": card(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "serve": " ".join(server.command),
        **fields,
        "requests_finished": load.finished,
        "request_failures": load.failures[:20],
        "num_request_failures": len(load.failures),
    }


def finish_report(result: dict, out: str) -> int:
    """Prints the requests' outcome, writes the JSON report to `out` (if given) and returns the
    exit status: non-zero when any request failed."""
    print(f"requests finished {result['requests_finished']}, "
          f"failed {result['num_request_failures']}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["num_request_failures"] else 0


class Server:
    """`tidal serve` of dummy weights of `config`, its tokenizer made beside it (Qwen3's, committed
    compressed, for the real shapes' vocabulary; the fixture's otherwise)."""

    def __init__(self, binary: str, config: str, args: list[str], prefix: str,
                 env: dict[str, str] | None = None):
        config_values = json.loads(Path(config).read_text())
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        tokenizer_dir = self.workdir / "tokenizer"
        tokenizer_dir.mkdir()
        if config_values.get("vocab_size", 0) > 100000:
            (tokenizer_dir / "tokenizer.json").write_bytes(lzma.decompress(
                (REPO / "tests/fixtures/tokenizers/qwen3/tokenizer.json.xz").read_bytes()))
        else:
            shutil.copy(Path(config).parent / "tokenizer.json", tokenizer_dir)
        shutil.copy(config, tokenizer_dir / "config.json")
        self.port = free_port()
        self.command = [binary, "serve", "--port", str(self.port), "--load-format", "dummy",
                        "--config", config, "--model", str(tokenizer_dir),
                        "--served-model-name", "bench", "--generation-config", "none", *args]
        self.log_path = self.workdir / "serve.log"
        print("$", " ".join(self.command), flush=True)
        self.process = subprocess.Popen(
            self.command, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, NCCL_NVLS_ENABLE="0", **(env or {})), start_new_session=True)

    def wait_healthy(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as reply:
            return reply.read().decode()

    def stop(self, keep_log: str = "") -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.copy(self.log_path, keep_log or self.workdir / "kept.log")
