"""Helpers of the API tests: starting and stopping `tidal serve`, the CLI truth (`tidal
generate`), tokenizing, and reading /metrics.

Every server started here dies with the test session: SIGTERM on teardown (SIGKILL after a
timeout), and PR_SET_PDEATHSIG so that even a killed pytest takes its servers with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

SOURCE_DIR = Path(os.environ.get("TIDAL_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY = Path(os.environ.get("TIDAL_BINARY", SOURCE_DIR / "build" / "tidal"))
FIXTURE_DIR = SOURCE_DIR / "tests" / "fixtures" / "tiny-qwen3-moe"
REFERENCE_FILE = SOURCE_DIR / "tests" / "fixtures" / "tiny-qwen3-moe.reference.json"
MODEL = "tiny-qwen3-moe"  # the served name of the bundled fixture
EOS_IDS = (1531, 1533)  # generation_config.json's eos_token_id

STARTUP_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 10

# The main server: --max-model-len is small enough that "prompt too long" is cheap to provoke.
MAX_MODEL_LEN = 1024


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM it when the pytest process dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def assert_alive(self) -> None:
        assert self.process.poll() is None, (
            f"tidal serve exited with {self.process.returncode}:\n{self.log()}"
        )


def _launch(args: tuple[str, ...], log_path: Path) -> Server | None:
    """Starts `tidal serve` and waits until /health answers; None if the free port was taken
    by someone else before the server could bind it."""
    port = free_port()
    host = () if "--host" in args else ("--host", "127.0.0.1")  # a test may bind elsewhere
    command = [str(BINARY), "serve", *host, "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    server = Server(process, port, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            if "cannot bind" in server.log():
                return None
            pytest.fail(f"{' '.join(command)} exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError,
                http.client.HTTPException):
            # Not up yet, or not us: an ephemeral port of the coordinator's ZeroMQ sockets may
            # land on the port picked for HTTP; the server then fails to bind and is retried.
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"tidal serve did not answer /health in {STARTUP_TIMEOUT_S} s:\n{server.log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def start_server(*args: str):
    """Starts `tidal serve` on a free port with extra `args`, yields a Server once /health
    answers, and stops it afterwards (failing if it does not stop cleanly or died)."""
    if not BINARY.exists():
        pytest.fail(f"{BINARY} does not exist: build it first (cmake --build build)")
    log_dir = Path(tempfile.mkdtemp(prefix="tidal-api-test-"))
    try:
        server = None
        for attempt in range(3):  # the port picked may be taken between bind(0) and serve
            server = _launch(args, log_dir / f"serve-{attempt}.log")
            if server is not None:
                break
        if server is None:
            pytest.fail("tidal serve could not bind a free port in 3 attempts")
        assert "serving '" in server.log(), server.log()
        try:
            yield server
        finally:
            stop_server(server)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def stop_server(server: Server) -> None:
    process = server.process
    if process.poll() is not None:
        # Stopped by a test (which checks how), or died: only the latter is an error.
        assert process.returncode == 0, f"tidal serve died with {process.returncode}:\n{server.log()}"
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        raise AssertionError(
            f"tidal serve ignored SIGTERM for {SHUTDOWN_TIMEOUT_S} s and was killed:\n{server.log()}"
        )
    assert process.returncode == 0, (
        f"tidal serve exited with {process.returncode} after SIGTERM:\n{server.log()}"
    )


def cli_generate(prompt: str | None = None, prompt_token_ids: list[int] | None = None,
                 max_tokens: int = 24, extra: tuple[str, ...] = ()) -> dict:
    """`tidal generate --json` greedily (EOS ignored): the CLI truth the API must match."""
    command = [str(BINARY), "generate", "--json", "--model", str(FIXTURE_DIR),
               "--max-tokens", str(max_tokens), "--ignore-eos", "--temperature", "0", *extra]
    if prompt is not None:
        command += ["--prompt", prompt]
    else:
        command += ["--prompt-token-ids", ",".join(map(str, prompt_token_ids))]
    result = subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def tokenize(text: str) -> list[int]:
    result = subprocess.run([str(BINARY), "tokenize", "--tokenizer", str(FIXTURE_DIR), "--json"],
                            input=text.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)["ids"]


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def read_metrics(base: str) -> dict[str, float]:
    """GET /metrics parsed into {'name{labels}': value}, checking that every line is valid
    Prometheus text (a HELP or TYPE comment, or a sample)."""
    response = httpx.get(base + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ .+$", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"{what} did not hold within {timeout_s} s (last value: {last!r})")


def extra(obj, name: str):
    """A field the OpenAI types do not declare (return_token_ids' prompt_token_ids/token_ids)."""
    value = getattr(obj, name, None)
    if value is None and getattr(obj, "model_extra", None):
        value = obj.model_extra.get(name)
    return value


# `--cpu-kvcache-space`'s default: a CPU rank's KV cache budget.
DEFAULT_CPU_KVCACHE_SPACE = 512 << 20


def cpu_kv_bytes_per_token() -> int:
    """The fixture's keys and values of one token over every layer, f32 on the CPU."""
    config = json.loads((FIXTURE_DIR / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4


def cpu_kv_cache_capacity(budget_bytes: int, block_size: int = 16) -> int:
    """The tokens a CPU rank's KV cache of `budget_bytes` holds: whole blocks."""
    return budget_bytes // (cpu_kv_bytes_per_token() * block_size) * block_size
