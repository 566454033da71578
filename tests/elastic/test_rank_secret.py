"""Only ranks with the server's rank secret join, on CPU rank processes (Gloo).

With `--scale-spawn external`, a `tidal rank` started by hand with the secret (from
`--rank-secret-file` or TIDAL_RANK_SECRET) joins a scale-up and serves; one with a wrong secret
and one with none exit non-zero with a clear message, take no place, and count as no rank and
no rank failure, while the server keeps serving. A peer speaking the control protocol itself
(a minimal ZeroMQ DEALER, below) is refused the same way for a hello without the secret or with
a wrong one, and is logged once however much it sends. Ranks the server starts itself get the
secret in their environment, never on their command line. Every wait has a timeout."""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import BINARY, MODEL, extra, start_server, wait_for  # noqa: E402
from test_elastic_scaling import (PROMPTS, await_operation,  # noqa: E402
                                  check_reference_prompts, scale, serve_with_hand_started_rank,
                                  topology, waiting_for_external_ranks)

TIMEOUT_S = 60
SECRET_ENV = "TIDAL_RANK_SECRET"
SERVER_ARGS = ("--ranks", "2", "--expert-slots", "4", "--scale-spawn", "external",
               "--scale-prepare-timeout", "60")


def environment(secret: str | None) -> dict[str, str]:
    """This process's environment with TIDAL_RANK_SECRET set to `secret` (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != SECRET_ENV}
    if secret is not None:
        env[SECRET_ENV] = secret
    return env


def start_rank(coordinator: str, *args: str, secret: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(BINARY), "rank", "--coordinator", coordinator, *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=environment(secret))


def refused(rank: subprocess.Popen) -> str:
    """The rank's exit is non-zero (within the timeout); returns what it said."""
    try:
        code = rank.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rank.kill()
        rank.wait()
        raise AssertionError("a rank without the right secret did not exit") from None
    said = rank.stderr.read().decode(errors="replace")
    assert code != 0, said
    return said


def completes(url: str) -> None:
    """A greedy request gives the reference's tokens."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                           timeout=TIMEOUT_S)
    choice = client.completions.create(
        model=MODEL, prompt=PROMPTS[0]["prompt_token_ids"], max_tokens=16, temperature=0,
        extra_body={"ignore_eos": True, "return_token_ids": True}).choices[0]
    assert extra(choice, "token_ids") == PROMPTS[0]["greedy_token_ids"][:16]


def unchanged(before: dict, now: dict) -> None:
    """Nobody joined, failed or was counted as a rank."""
    for key in ("epoch", "num_ranks", "rank_failures", "failure"):
        assert now[key] == before[key], (key, before[key], now[key])
    assert [r["member"] for r in now["ranks"]] == [r["member"] for r in before["ranks"]]


def warnings_about(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("W ") and needle in line]


def test_only_a_rank_with_the_secret_joins(tmp_path):
    secret_file = tmp_path / "rank-secret"
    with start_server(*SERVER_ARGS, "--rank-secret-file", str(secret_file)) as server:
        url = server.url
        # The front made the secret and wrote it for the operator, readable by its owner only.
        secret = secret_file.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", secret), secret
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert f"rank secret written to {secret_file} (mode 0600)" in server.log()
        # Its own ranks have it in their environment, never on their command line (ps).
        for rank in topology(url)["ranks"]:
            pid = rank["pid"]
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert f"{SECRET_ENV}={secret}".encode() in \
                Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        coordinator = topology(url)["coordinator"]
        before = topology(url)

        # While a scale-up waits for a rank started elsewhere: a rank with no secret, and one with
        # a wrong one, are refused and take no place; the server serves meanwhile.
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 3}, timeout=10)
        assert response.status_code == 202, response.text
        operation_id = response.json()["id"]
        waiting_for_external_ranks(server, operation_id)
        said = refused(start_rank(coordinator))
        assert "no rank secret: give the front's with --rank-secret-file PATH or in " \
               "TIDAL_RANK_SECRET" in said, said
        wrong = start_rank(coordinator, secret="not-the-secret-of-this-server")
        said = refused(wrong)
        assert "refused this rank: wrong rank secret" in said, said
        # With the secret but a spawn ticket (the mark of a process this front forked, here of
        # one it never started): no start of ours waits for it, so it takes no place, as the
        # queued hello of a start the front killed and did again must not.
        said = refused(start_rank(coordinator, "--spawn-ticket", "0", secret=secret))
        assert "refused this rank: no place is free" in said, said
        unchanged(before, topology(url))
        completes(url)
        # Logged once, naming the process, for its hello and its heartbeats together.
        lines = warnings_about(server.log(tail=1 << 20), f"-pid-{wrong.pid}-")
        assert len(lines) == 1, lines
        assert "wrong rank secret" in lines[0], lines

        # The right secret, from the file the front wrote: the scale-up completes with it.
        rank = start_rank(coordinator, "--rank-secret-file", str(secret_file))
        serve_with_hand_started_rank(url, operation_id, rank)
        assert topology(url)["rank_failures"] == 0
        assert secret not in server.log(tail=1 << 20)  # where it is, never what it is
        server.assert_alive()


def test_external_ranks_need_a_secret():
    """--scale-spawn external with neither --rank-secret-file nor TIDAL_RANK_SECRET: ranks started
    elsewhere could never join, so the server refuses to start, saying how to give one."""
    result = subprocess.run([str(BINARY), "serve", "--port", "0", *SERVER_ARGS],
                            capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                            env=environment(None))
    assert result.returncode != 0
    said = result.stderr.decode(errors="replace")
    assert "--rank-secret-file PATH" in said and SECRET_ENV in said, said


def msgpack(value) -> bytes:
    """The msgpack of a map of short strings and small ints (all these tests send)."""
    if isinstance(value, dict):
        assert len(value) < 16
        return bytes([0x80 | len(value)]) + b"".join(msgpack(k) + msgpack(v)
                                                   for k, v in value.items())
    if isinstance(value, str):
        data = value.encode()
        assert len(data) < 256
        return (bytes([0xa0 | len(data)]) if len(data) < 32 else bytes([0xd9, len(data)])) + data
    assert isinstance(value, int) and -32 <= value < 128
    return struct.pack("b", value)


class Dealer:
    """A ZeroMQ DEALER speaking ZMTP 3.0 (NULL mechanism) over a plain socket: what a peer that is
    no rank of the server can send its coordinator, with no ZeroMQ library."""

    def __init__(self, endpoint: str, identity: bytes):
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0")
                          + b"\x00" + bytes(31))
        greeting = self.recv_exact(64)
        assert greeting[0] == 0xff and greeting[10] == 3, greeting
        ready = b"\x05READY" + self.property(b"Socket-Type", b"DEALER") + \
            self.property(b"Identity", identity)
        self.send_frame(ready, command=True)
        flags, body = self.recv_frame()
        assert flags & 0x04 and body.startswith(b"\x05READY"), body

    @staticmethod
    def property(name: bytes, value: bytes) -> bytes:
        return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

    def recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the coordinator closed the connection"
            data += chunk
        return data

    def send_frame(self, body: bytes, command: bool = False) -> None:
        flags = 0x04 if command else 0x00
        if len(body) > 255:
            self.sock.sendall(bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body)
        else:
            self.sock.sendall(bytes([flags, len(body)]) + body)

    def recv_frame(self) -> tuple[int, bytes]:
        flags = self.recv_exact(1)[0]
        size = struct.unpack(">Q", self.recv_exact(8))[0] if flags & 0x02 else self.recv_exact(1)[0]
        return flags, self.recv_exact(size)

    def send(self, message: dict) -> None:
        self.send_frame(msgpack(message))

    def receive(self, timeout_s: float = 10) -> bytes | None:
        """The next message's bytes, or None after `timeout_s`."""
        self.sock.settimeout(timeout_s)
        try:
            flags, body = self.recv_frame()
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(10)
        assert not flags & 0x05, flags  # one frame, no command
        return body

    def close(self) -> None:
        self.sock.close()


def test_the_protocol_refuses_peers_without_the_secret():
    """Hellos without the secret or with a wrong one get a refusal; heartbeats speaking for a
    rank with a wrong secret, and any other message of a peer that is no rank, are dropped. One
    warning per peer, whatever it sends; the server serves throughout. The secret comes from
    TIDAL_RANK_SECRET here, on both sides."""
    secret = "an-operator-chosen-rank-secret"
    saved = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = secret
    try:
        with start_server(*SERVER_ARGS) as server:
            url = server.url
            assert f"rank secret from {SECRET_ENV}" in server.log()
            coordinator = topology(url)["coordinator"]
            before = topology(url)
            intruder = Dealer(coordinator, b"intruder-1")
            beats = Dealer(coordinator, b"intruder-1-heartbeat")
            try:
                for _ in range(3):
                    intruder.send({"type": "hello", "rank": -1})
                    reply = intruder.receive()
                    assert reply is not None and b"refused" in reply, reply
                    assert b"no rank secret" in reply, reply
                intruder.send({"type": "hello", "rank": 0, "secret": "a-guess-at-the-secret"})
                reply = intruder.receive()
                assert reply is not None and b"wrong rank secret" in reply, reply
                for _ in range(20):
                    beats.send({"type": "heartbeat", "identity": "intruder-1",
                                "secret": "a-guess-at-the-secret"})
                    intruder.send({"type": "failed", "rank": 0, "message": "spoofed"})
                    intruder.send({"type": "ready", "rank": 0})
                assert intruder.receive(timeout_s=0.5) is None
                assert beats.receive(timeout_s=0.1) is None
                unchanged(before, topology(url))
                completes(url)
            finally:
                intruder.close()
                beats.close()
            lines = warnings_about(server.log(tail=1 << 20), "intruder-1")
            assert len(lines) == 1, lines
            assert "refused its hello (no rank secret)" in lines[0], lines

            # The same secret in a hand-started rank's environment: it joins a scale-up.
            response = httpx.post(url + "/v1/admin/scale", json={"ranks": 3}, timeout=10)
            assert response.status_code == 202, response.text
            operation_id = response.json()["id"]
            waiting_for_external_ranks(server, operation_id)
            rank = start_rank(coordinator, secret=secret)
            try:
                operation = await_operation(url, operation_id, "the scale-up")
                assert operation["result"] == "ok", operation
                completes(url)
                assert scale(url, 2, remove_ranks=[2])["result"] == "ok"
                assert rank.wait(timeout=30) == 0, rank.stderr.read().decode(errors="replace")
            finally:
                if rank.poll() is None:
                    rank.kill()
                    rank.wait()
            assert topology(url)["rank_failures"] == 0
            server.assert_alive()
    finally:
        if saved is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = saved
