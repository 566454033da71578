"""Many concurrent streams, and a client that hangs up mid-stream."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk

from support import MODEL, read_metrics, wait_for

CLIENTS = 64
MAX_TOKENS = 16
RUNNING = 'tidal_num_requests_running{rank="0"}'
WAITING = 'tidal_num_requests_waiting{rank="0"}'
KV_USAGE = 'tidal_kv_cache_usage_perc{rank="0"}'
ABORTS = 'tidal_request_finished_total{finish_reason="abort"}'


async def one_stream(client: openai.AsyncOpenAI, index: int, prompt: dict) -> dict:
    """One streaming request through the official client, read as raw SSE lines so that the
    framing ([DONE] last, once) is checked too; chat chunks must parse as the client's
    ChatCompletionChunk, and the last chunk before [DONE] carries the usage."""
    chat = index % 2 == 1
    common = dict(model=MODEL, max_tokens=MAX_TOKENS, temperature=0, stream=True,
                  stream_options={"include_usage": True},
                  extra_body={"return_token_ids": True, "ignore_eos": True})
    if chat:
        request = client.chat.completions.with_streaming_response.create(
            messages=[{"role": "user", "content": prompt["text"]}], **common)
    else:
        request = client.completions.with_streaming_response.create(prompt=prompt["text"], **common)
    events = []
    async with request as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.iter_lines():
            if line.startswith(":"):
                continue  # an SSE comment: the server's keep-alive while the request waits
            if line:
                assert line.startswith("data: "), line
                events.append(line[len("data: "):])
    assert events and events[-1] == "[DONE]", f"stream {index} did not end with [DONE]: {events[-3:]}"
    assert events.count("[DONE]") == 1
    chunks = [json.loads(event) for event in events[:-1]]
    ids, finish = [], None
    for chunk in chunks[:-1]:
        if chat:
            ChatCompletionChunk.model_validate(chunk)
        else:
            # The client's Completion type wants a finish_reason, which is null until the last
            # chunk of a stream, so completion chunks are checked by hand.
            assert chunk["object"] == "text_completion" and chunk["model"] == MODEL
            assert all(isinstance(c["text"], str) for c in chunk["choices"])
        for choice in chunk["choices"]:
            ids += choice.get("token_ids") or []
            finish = choice["finish_reason"] or finish
    assert chunks[-1]["choices"] == []
    usage = CompletionUsage.model_validate(chunks[-1]["usage"])
    return {"chat": chat, "ids": ids, "finish": finish, "usage": usage, "prompt": prompt}


def test_burst_of_64_connections(server):
    """64 clients connecting in the same instant are all served: the listen backlog must hold
    them (a backlog of 5, as the earlier HTTP library had, let the kernel reset most of such a
    burst)."""
    for _ in range(3):
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(CLIENTS)]
        try:
            for sock in sockets:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answers = []
            for sock in sockets:
                answer = b""
                try:
                    while b"\r\n" not in answer and (data := sock.recv(256)):
                        answer += data
                except OSError as error:
                    answer = repr(error).encode()
                answers.append(answer.split(b"\r\n")[0])
        finally:
            for sock in sockets:
                sock.close()
        failed = [a for a in answers if a != b"HTTP/1.1 200 OK"]
        assert not failed, f"{len(failed)} of {CLIENTS} connections failed: {failed[:3]}"


def test_64_concurrent_streams(server, client, reference):
    async def run_all():
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                      timeout=60, http_client=openai.DefaultAsyncHttpxClient(
                                          limits=limits, timeout=60)) as async_client:
            prompts = reference["prompts"]
            tasks = [one_stream(async_client, i, prompts[i % len(prompts)]) for i in range(CLIENTS)]
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)

    started = time.monotonic()
    results = asyncio.run(run_all())
    elapsed = time.monotonic() - started
    assert len(results) == CLIENTS
    for i, result in enumerate(results):
        assert result["finish"] == "length", f"stream {i}: {result['finish']}"
        assert result["usage"].completion_tokens == MAX_TOKENS, f"stream {i}"
        assert len(result["ids"]) == MAX_TOKENS, f"stream {i}"
        if not result["chat"]:
            # Batched with 63 others, greedy decoding still gives the reference tokens.
            assert result["ids"] == result["prompt"]["greedy_token_ids"][:MAX_TOKENS], f"stream {i}"
    print(f"{CLIENTS} streams of {MAX_TOKENS} tokens in {elapsed:.2f} s")

    # The server keeps serving, with nothing left running.
    server.assert_alive()
    metrics = wait_for(lambda: (m := read_metrics(server.url))[RUNNING] == 0 and m[WAITING] == 0 and m,
                       5, what="no request running or waiting")
    assert metrics[KV_USAGE] == 0
    response = client.completions.create(model=MODEL, prompt="The", max_tokens=4,
                                         extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 4


def test_disconnect_mid_stream_frees_the_slot(server):
    """A client that hangs up mid-stream gets its slots and KV blocks freed at once. The fixture
    model decodes thousands of tokens a second, so the request asks for 8 choices of 1000
    tokens (seconds of work) to be still running when the client goes."""
    choices, max_tokens = 8, 1000
    before = read_metrics(server.url)
    assert before[RUNNING] == 0
    body = {"model": MODEL, "prompt": "The", "max_tokens": max_tokens, "n": choices, "ignore_eos": True,
            "stream": True, "temperature": 0}
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        with raw.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            events = 0
            for line in lines:
                if line.startswith("data: "):
                    assert line != "data: [DONE]", "the stream finished before the test hung up"
                    events += 1
                    if events == 3:
                        break
            # While the stream is open its requests hold slots and KV blocks.
            held = read_metrics(server.url)
            assert held[RUNNING] == choices
            assert held[KV_USAGE] > 0
            lines.close()
        # Leaving the block closes the connection mid-stream.
    hung_up = time.monotonic()

    def freed():
        m = read_metrics(server.url)
        return m[RUNNING] == 0 and m[KV_USAGE] == 0 and m.get(ABORTS, 0) >= before.get(ABORTS, 0) + choices and m

    after = wait_for(freed, 10, what="slots, KV blocks and abort count after the client hung up")
    freed_in = time.monotonic() - hung_up
    # The choices were aborted, not run to the end.
    assert after[ABORTS] == before.get(ABORTS, 0) + choices
    length = 'tidal_request_finished_total{finish_reason="length"}'
    assert after.get(length, 0) == before.get(length, 0)
    generated = after["tidal_generation_tokens_total"] - before["tidal_generation_tokens_total"]
    assert generated < choices * max_tokens, generated
    print(f"freed {freed_in:.3f} s after the hang-up, {generated:.0f} tokens generated")
    server.assert_alive()
