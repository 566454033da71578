"""The HTTP layer's limits against raw sockets: every oversized, malformed, trickled or excess
request gets its status (or is closed), and the server serves the next request right after."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib

import httpx
import pytest

from rawhttp import (ResponseReader, closed_within, completion_body, connect, post,
                     raise_file_limit, read_response, request)
from support import MODEL, read_metrics, start_server, wait_for

BODY_LIMIT = 64 << 10
READ_TIMEOUT_S = 2
KEEP_ALIVE_S = 1
SERVER_ARGS = ("--max-request-bytes", str(BODY_LIMIT), "--max-header-bytes", "4096",
               "--max-headers", "20", "--max-request-line", "1024",
               "--http-read-timeout", str(READ_TIMEOUT_S),
               "--http-keep-alive-timeout", str(KEEP_ALIVE_S), "--max-model-len", "2048")


@pytest.fixture(scope="module")
def server():
    raise_file_limit()
    with start_server(*SERVER_ARGS) as running:
        yield running


def assert_serves(server) -> None:
    """The next ordinary request completes."""
    status, _, body = request(server.port, post("/v1/completions", completion_body()))
    assert status == 200, body
    assert json.loads(body)["choices"][0]["finish_reason"] == "length"
    server.assert_alive()


def error_of(body: bytes) -> dict:
    return json.loads(body)["error"]


def chunked(body: bytes, piece: int = 4096) -> bytes:
    out = b""
    for start in range(0, len(body), piece):
        part = body[start:start + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_413(server):
    body = completion_body(prompt="x" * (BODY_LIMIT * 3))
    raw = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body))
    status, _, reply = request(server.port, raw)
    assert status == 413, reply
    assert "larger than" in error_of(reply)["message"]
    assert_serves(server)


def test_chunked_body_within_the_limit_is_served(server):
    raw = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked(completion_body(), 7))
    status, _, reply = request(server.port, raw)
    assert status == 200, reply


def test_gzip_body_is_limited_by_its_decompressed_size(server):
    # 3 MB of JSON compresses to a few KB: under the limit on the wire, far over it decoded.
    bomb = gzip.compress(completion_body(prompt=" " * (3 << 20)))
    assert len(bomb) < BODY_LIMIT
    status, _, reply = request(server.port, post("/v1/completions", bomb,
                                                 {"Content-Encoding": "gzip"}))
    assert status == 413, reply
    assert "decompressed" in error_of(reply)["message"]
    assert_serves(server)


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress),
                                               ("deflate", zlib.compress)])
def test_compressed_body_within_the_limit_is_served(server, encoding, compress):
    status, _, reply = request(server.port, post("/v1/completions", compress(completion_body()),
                                                 {"Content-Encoding": encoding}))
    assert status == 200, reply


def test_unknown_content_encoding_is_415_and_corrupt_gzip_400(server):
    status, _, reply = request(server.port, post("/v1/completions", b"xyz",
                                                 {"Content-Encoding": "br"}))
    assert status == 415, reply
    status, _, reply = request(server.port, post("/v1/completions", b"\x1f\x8bnot gzip",
                                                 {"Content-Encoding": "gzip"}))
    assert status == 400, reply
    assert_serves(server)


def test_content_length_over_the_limit_is_413_before_the_body(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100000000\r\n\r\n")
        status, _, reply = read_response(sock)
    assert status == 413, reply
    assert_serves(server)


def test_oversized_headers_are_431(server):
    status, _, _ = request(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " +
                           b"a" * 8000 + b"\r\n\r\n")
    assert status == 431
    many = "".join(f"X-H{i}: v\r\n" for i in range(30)).encode()
    status, _, reply = request(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status == 431, reply
    assert "more than 20 headers" in error_of(reply)["message"]
    assert_serves(server)


def test_long_request_line_is_414(server):
    status, _, reply = request(server.port,
                               b"GET /health?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414, reply
    assert_serves(server)


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                 b"\x00\x01\x02\x03\r\n\r\n",
                                 b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n"])
def test_malformed_requests_are_400(server, raw):
    status, _, _ = request(server.port, raw)
    assert status == 400
    assert_serves(server)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_post_bodies_must_be_json(server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    raw = post("/v1/completions", completion_body(), headers)
    if content_type is None:
        raw = raw.replace(b"Content-Type: application/json\r\n", b"")
    status, _, reply = request(server.port, raw)
    assert status == 415, reply
    assert error_of(reply)["code"] == "unsupported_media_type"
    # The media type's parameters and case do not matter.
    status, _, reply = request(server.port, post(
        "/v1/completions", completion_body(), {"Content-Type": "Application/JSON; charset=utf-8"}))
    assert status == 200, reply


def test_slowloris_sockets_do_not_delay_a_request_and_are_closed(server):
    sockets = []
    stop = threading.Event()

    def trickle():
        # One byte every 0.3 s per socket: a request that never completes.
        for byte in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n":
            if stop.is_set():
                return
            for sock in list(sockets):
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    pass
            time.sleep(0.3)

    for _ in range(200):
        sockets.append(connect(server.port))
    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert_serves(server)
        assert time.monotonic() - started < 2.0
        health = httpx.get(server.url + "/health", timeout=5)
        assert health.status_code == 200
        # The read timeout ends every one of them (the whole request must arrive within it).
        deadline = time.monotonic() + READ_TIMEOUT_S + 5
        for sock in sockets:
            assert closed_within(sock, max(deadline - time.monotonic(), 0.1)), \
                "a trickling socket outlived --http-read-timeout"
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    assert_serves(server)


def test_idle_keep_alive_connection_is_closed(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection", "keep-alive") != "close"
        # Kept alive for a next request...
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        # ...and closed once idle past --http-keep-alive-timeout.
        assert closed_within(sock, KEEP_ALIVE_S + 3)


def test_pipelined_requests_are_answered_in_order(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post(
            "/v1/completions", completion_body()) + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = ResponseReader(sock)
        assert responses.read()[0] == 200
        status, _, body = responses.read()
        assert status == 200 and json.loads(body)["object"] == "text_completion"
        status, _, body = responses.read()
        assert status == 200 and json.loads(body)["object"] == "list"


def running(server) -> float:
    return read_metrics(server.url).get('tidal_num_requests_running{rank="0"}', 0)


def aborted(server) -> float:
    return read_metrics(server.url).get(
        'tidal_request_finished_total{finish_reason="abort"}', 0)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_its_request(server, stream):
    before = aborted(server)
    body = completion_body(max_tokens=2000, ignore_eos=True, stream=stream)
    sock = connect(server.port)
    sock.sendall(post("/v1/completions", body))
    wait_for(lambda: running(server) >= 1, 10, what="the request to run")
    sock.close()
    # Cancelled at once, not after 4000 tokens: the slot is free and the abort is counted.
    wait_for(lambda: running(server) == 0, 5, what="the hung-up request to be cancelled")
    assert aborted(server) == before + 1
    assert_serves(server)


def assert_turned_away(response: tuple[int, dict, bytes], flag: str) -> None:
    """A 503 that says when to retry and which limit was reached."""
    status, headers, reply = response
    assert status == 503, reply
    assert headers["retry-after"] == "1"
    assert flag in error_of(reply)["message"]


def test_max_queued_requests_turns_away_with_retry_after():
    with start_server("--max-num-seqs", "2", "--max-queued-requests", "2",
                      "--max-model-len", "2048") as server:
        streams = []
        try:
            for _ in range(4):  # 2 running, 2 queued
                sock = connect(server.port, timeout=30)
                sock.sendall(post("/v1/completions", completion_body(
                    max_tokens=2000, ignore_eos=True, stream=True)))
                streams.append(sock)
            for sock in streams:  # a stream's head is sent once it is admitted, queued or not
                assert read_response_head(sock) == 200
            assert_turned_away(request(server.port, post("/v1/completions", completion_body())),
                               "--max-queued-requests")
        finally:
            for sock in streams:
                sock.close()
        wait_for(lambda: running(server) == 0, 10, what="the streams to be cancelled")
        assert_serves(server)


def read_response_head(sock: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(4096)
        assert more, "closed before the head"
        data += more
    return int(data.split(b" ", 2)[1])


def test_max_connections_refuses_with_503():
    raise_file_limit()
    with start_server("--max-connections", "40", "--http-read-timeout", "60") as server:
        idle = [connect(server.port) for _ in range(40)]
        try:
            time.sleep(0.3)  # the server has accepted them all
            with connect(server.port) as extra:
                assert_turned_away(read_response(extra), "--max-connections")
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: httpx.get(server.url + "/health", timeout=5).status_code == 200, 10,
                 what="a connection slot")
        assert_serves(server)


def test_exceptions_never_reach_the_client_as_a_crash(server):
    # Deeply nested JSON and binary garbage in a JSON body: answered, and the server lives on.
    deep = b'{"model":"' + MODEL.encode() + b'","prompt":' + b"[" * 100000 + b"]" * 100000 + b"}"
    status, _, _ = request(server.port, post("/v1/completions", deep[:BODY_LIMIT - 1]))
    assert status in (400, 413)
    status, _, _ = request(server.port, post("/v1/completions", bytes(range(256)) * 10))
    assert status == 400
    assert_serves(server)
