"""Raw HTTP over sockets, for what an HTTP client library will not send: malformed, oversized,
trickled or abandoned requests."""

from __future__ import annotations

import json
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import MODEL  # noqa: E402,F401


def raise_file_limit() -> int:
    """Takes the hard open-file limit (thousands of sockets) and returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class ResponseReader:
    """Reads responses off one socket in order, keeping bytes past one response for the next
    (pipelining)."""

    def __init__(self, sock: socket.socket, timeout: float = 10):
        self.sock, self.pending = sock, b""
        sock.settimeout(timeout)

    def _more(self, what: str) -> None:
        more = self.sock.recv(65536)
        if not more:
            raise ConnectionError(f"closed before {what}: {self.pending!r}")
        self.pending += more

    def read(self) -> tuple[int, dict, bytes]:
        """One whole response (Content-Length or chunked): status, headers, body."""
        while b"\r\n\r\n" not in self.pending:
            self._more("the headers")
        head, self.pending = self.pending.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.pending) < length:
                self._more("the body")
            body, self.pending = self.pending[:length], self.pending[length:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            while b"0\r\n\r\n" not in self.pending:
                self._more("the last chunk")
            end = self.pending.index(b"0\r\n\r\n") + 5
            body, self.pending = self.pending[:end], self.pending[end:]
            return status, headers, body
        # Neither: the body runs to the close.
        try:
            while True:
                self._more("the close")
        except ConnectionError:
            pass
        body, self.pending = self.pending, b""
        return status, headers, body


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Reads one whole response off a socket that carries no other."""
    return ResponseReader(sock, timeout).read()


def request(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        return read_response(sock, timeout)


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    fields = {"Host": "127.0.0.1", "Content-Type": "application/json",
              "Content-Length": str(len(body)), **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


def completion_body(**fields) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 1, **fields}).encode()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes `sock` within `seconds` (anything it sends first is read)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True
    return False
