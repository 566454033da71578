"""Requests past a limit, or asking for what tidal does not implement, are refused with a 400
naming the field before any work is queued, and the server keeps serving after each: JSON nested
100,000 deep, huge max_tokens, thousands of stop strings, non-neutral penalties and the like."""

from __future__ import annotations

import json

import openai
import pytest

from support import MAX_MODEL_LEN, MODEL, read_metrics, start_server

HI = [{"role": "user", "content": "hi"}]
DEEP = 100_000
INT64_MAX = 2**63 - 1
SMALL_MODEL_LEN = 64


def deep(depth: int = DEEP, open_: str = "[", close: str = "]", inner: str = "1") -> str:
    return open_ * depth + inner + close * depth


def assert_serves(server, http) -> None:
    """The server is alive and answers an ordinary request of each kind."""
    server.assert_alive()
    done = http.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 2,
                                               "ignore_eos": True})
    assert done.status_code == 200, done.text
    assert done.json()["usage"]["completion_tokens"] == 2
    chat = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "max_tokens": 2,
                                                    "ignore_eos": True})
    assert chat.status_code == 200, chat.text


def refused(response, param: str | None, *words: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    return error


def post_raw(http, path: str, body: str):
    return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


# Ids are given: pytest puts the test id in PYTEST_CURRENT_TEST, and a 200 KB one is more than
# exec() takes for the server it starts.
@pytest.mark.parametrize("path,body,param", [
    # In the messages themselves, in a known field, in an unknown one, and the whole body.
    pytest.param("/v1/chat/completions",
                 '{"model":"tiny-qwen3-moe","messages":[{"role":"user","content":' + deep() + "}]}",
                 "messages", id="content"),
    pytest.param("/v1/chat/completions",
                 '{"model":"tiny-qwen3-moe","messages":'
                 + deep(DEEP, '[{"role":"user","content":', "}]", '"x"') + "}",
                 "messages", id="messages"),
    pytest.param("/v1/chat/completions",
                 '{"model":"tiny-qwen3-moe","messages":[{"role":"user","content":"hi"}],'
                 '"chat_template_kwargs":' + deep(DEEP, '{"a":', "}") + "}",
                 "chat_template_kwargs", id="chat_template_kwargs"),
    pytest.param("/v1/completions",
                 '{"model":"tiny-qwen3-moe","prompt":"The","stop":' + deep() + "}", "stop",
                 id="stop"),
    pytest.param("/v1/completions",
                 '{"model":"tiny-qwen3-moe","prompt":"The","whatever":' + deep() + "}", "whatever",
                 id="unknown_field"),
    pytest.param("/v1/completions", deep(), None, id="body"),
    pytest.param("/v1/chat/completions", "[" * DEEP, None, id="unclosed"),
])
def test_deep_nesting_is_refused(server, http, path, body, param):
    refused(post_raw(http, path, body), param, "64 levels deep")
    assert_serves(server, http)


def test_nesting_within_the_limit_is_served(http):
    """A tool schema nested a few levels, as real clients send, passes."""
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "string"}}}}}}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, "tools": tools,
                                                        "tool_choice": "none", "max_tokens": 1})
    assert response.status_code == 200, response.text
    # 63 levels of lists under a field, inside the body's own object: 64 in all.
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 1,
                                                   "x": json.loads(deep(63))})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field,value,param,words", [
    ("max_tokens", INT64_MAX, "max_tokens", (str(INT64_MAX), str(MAX_MODEL_LEN))),
    ("max_tokens", 2**64 - 1, "max_tokens", ("too large",)),
    ("max_tokens", MAX_MODEL_LEN + 1, "max_tokens", (str(MAX_MODEL_LEN),)),
    ("max_tokens", -5, "max_tokens", ("at least 1",)),
    ("max_completion_tokens", INT64_MAX, "max_completion_tokens", (str(MAX_MODEL_LEN),)),
    ("max_completion_tokens", 0, "max_completion_tokens", ("at least 1",)),
    pytest.param("stop", ["s"] * 20_000, "stop", ("20000", "16"), id="stop-20000"),
    ("stop", ["s"] * 17, "stop", ("at most 16",)),
    ("stop", "a" * 257, "stop", ("256 bytes",)),
    ("stop_token_ids", [5] * 65, "stop_token_ids", ("at most 64",)),
    ("n", 129, "n", ("128",)),
    ("n", 10**12, "n", ("128",)),
    ("min_tokens", -1, "min_tokens", ()),
    ("top_k", 2**32 + 1, "top_k", ()),
    ("seed", 2**64, "seed", ()),
])
def test_limits(server, http, path, field, value, param, words):
    body = {"model": MODEL, field: value}
    if path == "/v1/completions":
        body["prompt"] = "The"
    else:
        body["messages"] = HI
    refused(http.post(path, json=body), param, *words)
    assert_serves(server, http)


def test_logprob_limits(server, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="The", max_tokens=1, logprobs=21)
    assert caught.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=1, logprobs=True,
                                       top_logprobs=21)
    assert caught.value.param == "top_logprobs"
    assert "20" in caught.value.message
    server.assert_alive()


def test_choices_per_request(server, http):
    """prompts x n is bounded before any prompt is tokenized."""
    refused(http.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 10_000,
                                               "max_tokens": 1}), "prompt", "128")
    refused(http.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "n": 100,
                                               "max_tokens": 1}), "n", "200")
    ok = http.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "n": 2,
                                            "max_tokens": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 4
    assert_serves(server, http)


def test_max_tokens_at_the_edge_of_the_context(client):
    """max_tokens up to max_model_len passes its own check; the prompt then decides."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[5, 6], max_tokens=MAX_MODEL_LEN)
    assert caught.value.param == "prompt"
    assert str(MAX_MODEL_LEN + 2) in caught.value.message


@pytest.mark.parametrize("field,value", [
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("tools_with_parallel_tool_calls", False),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", {"name": "f"}),
    ("best_of", 3),
    ("suffix", "tail"),
    ("use_beam_search", True),
])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_unimplemented_fields_are_named(server, http, path, field, value):
    body = {"model": MODEL, "max_tokens": 1, field: value}
    body.update({"prompt": "The"} if path == "/v1/completions" else {"messages": HI})
    if field == "tools_with_parallel_tool_calls":
        del body[field]
        field = "parallel_tool_calls"
        body.update(parallel_tool_calls=value,
                    tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    refused(http.post(path, json=body), field, f"tidal does not implement '{field}' yet")
    assert_serves(server, http)


def test_neutral_values_are_accepted(client):
    """What clients and harnesses send by default changes nothing and is served."""
    neutral = dict(presence_penalty=0, frequency_penalty=0.0, logit_bias={}, n=1, user="someone")
    chat = client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=2, response_format={"type": "text"}, tool_choice="none",
        tools=[], parallel_tool_calls=True, **neutral,
        extra_body={"repetition_penalty": 1.0, "min_p": 0, "best_of": 1, "echo": False,
                    "ignore_eos": True})
    assert chat.usage.completion_tokens == 2
    completion = client.completions.create(
        model=MODEL, prompt="The", max_tokens=2, best_of=1, echo=False, **neutral,
        extra_body={"repetition_penalty": 1, "min_p": 0.0, "ignore_eos": True,
                    "whatever_else": {"is": "ignored"}})
    assert completion.usage.completion_tokens == 2


@pytest.fixture(scope="module")
def short():
    """A server whose context is short enough to fill in a test."""
    with start_server("--max-model-len", str(SMALL_MODEL_LEN)) as running:
        yield running


def test_chat_without_max_tokens_runs_to_the_end_of_the_context(short):
    with openai.OpenAI(base_url=short.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        chat = c.chat.completions.create(model=MODEL, messages=HI, extra_body={"ignore_eos": True})
        assert chat.usage.prompt_tokens + chat.usage.completion_tokens == SMALL_MODEL_LEN
        assert chat.usage.completion_tokens > 16
        assert chat.choices[0].finish_reason == "length"
        # min_tokens is held to the context left, not to a 16-token default.
        chat = c.chat.completions.create(model=MODEL, messages=HI, extra_body={"min_tokens": 20})
        assert chat.usage.completion_tokens >= 20
        # Legacy completions keep OpenAI's default of 16.
        completion = c.completions.create(model=MODEL, prompt="The", extra_body={"ignore_eos": True})
        assert completion.usage.completion_tokens == 16


def test_no_error_was_a_500(server, http):
    assert_serves(server, http)
    metrics = read_metrics(server.url)
    assert metrics.get('tidal_http_requests_total{status="500"}', 0) == 0
    assert metrics['tidal_num_requests_running{rank="0"}'] == 0
