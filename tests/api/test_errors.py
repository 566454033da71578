"""Every error case answers with its status and an OpenAI-style error body, and the server
keeps serving after all of them."""

from __future__ import annotations

import httpx
import openai
import pytest

from support import MAX_MODEL_LEN, MODEL, read_metrics, start_server

SMALL_BODY_LIMIT = 4096
SMALL_MODEL_LEN = 64


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture(scope="module")
def errors_before(server):
    return read_metrics(server.url)


@pytest.fixture(scope="module")
def limited():
    """A second server with a small body limit and a short context."""
    with start_server("--max-request-bytes", str(SMALL_BODY_LIMIT),
                      "--max-model-len", str(SMALL_MODEL_LEN)) as running:
        yield running


def test_malformed_json(http, errors_before):
    for path in ("/v1/completions", "/v1/chat/completions"):
        response = http.post(path, content=b'{"model": "tiny-qwen3-moe", "prompt": "The"',
                             headers={"content-type": "application/json"})
        error = error_of(response, 400)
        assert error["type"] == "invalid_request_error"
        assert "JSON" in error["message"]


def test_body_not_an_object(http):
    error = error_of(http.post("/v1/completions", json=["not", "an", "object"]), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field,value", [
    ("max_tokens", "ten"),
    ("temperature", "hot"),
    ("stream", "yes"),
    ("n", 1.5),
    ("stop", 42),
    ("seed", "x"),
])
def test_wrong_types_name_the_param(client, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="The", max_tokens=2, extra_body={field: value})
    error = caught.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert error.param == field


def test_wrong_type_of_prompt_and_messages(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=None, extra_body={"prompt": {"text": "The"}})
    assert caught.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages="Hello")
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "hi"}])
    assert caught.value.param == "messages"


def test_missing_required_fields(http):
    error = error_of(http.post("/v1/completions", json={"model": MODEL}), 400)
    assert error["param"] == "prompt"
    error = error_of(http.post("/v1/chat/completions", json={"model": MODEL}), 400)
    assert error["param"] == "messages"
    error = error_of(http.post("/v1/completions", json={"prompt": "The"}), 400)
    assert error["param"] == "model"


def test_unknown_model(client):
    for call in (lambda: client.completions.create(model="gpt-4", prompt="The", max_tokens=1),
                 lambda: client.chat.completions.create(model="gpt-4", max_tokens=1,
                                                        messages=[{"role": "user", "content": "hi"}])):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.status_code == 404
        assert caught.value.code == "model_not_found"
        assert caught.value.param == "model"
        assert "gpt-4" in caught.value.message


def test_prompt_too_long(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[1] * (MAX_MODEL_LEN + 10), max_tokens=1)
    assert caught.value.param == "prompt"
    assert str(MAX_MODEL_LEN) in caught.value.message
    # A prompt that fits, but not with the completion asked for.
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[1] * (MAX_MODEL_LEN - 10), max_tokens=20)
    assert caught.value.param == "prompt"


def test_prompt_too_long_vs_max_model_len(limited):
    with openai.OpenAI(base_url=limited.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            c.completions.create(model=MODEL, prompt=[5] * SMALL_MODEL_LEN, max_tokens=1)
        assert caught.value.param == "prompt"
        assert str(SMALL_MODEL_LEN) in caught.value.message
        with pytest.raises(openai.BadRequestError) as caught:
            c.chat.completions.create(model=MODEL, max_tokens=1,
                                      messages=[{"role": "user", "content": "word " * SMALL_MODEL_LEN}])
        assert caught.value.param == "prompt"
        ok = c.completions.create(model=MODEL, prompt=[5] * (SMALL_MODEL_LEN - 8), max_tokens=8,
                                  extra_body={"ignore_eos": True})
        assert ok.usage.completion_tokens == 8


@pytest.mark.parametrize("field,value", [
    ("temperature", -1),
    ("top_p", 0),
    ("top_p", 1.5),
    ("top_k", -2),
    ("n", 0),
    ("logprobs", 30),
    ("max_tokens", 0),
])
def test_invalid_sampling_values(client, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="The", max_tokens=2, extra_body={field: value})
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.param == field


@pytest.mark.parametrize("body,param", [
    ({"prompt": [99999]}, "prompt"),  # a token id outside the 1536-token vocabulary
    ({"prompt": [[5, 6], [1536]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "The", "stop_token_ids": [99999]}, "stop_token_ids"),
    ({"prompt": "The", "stop": [""]}, "stop"),
    ({"prompt": "The", "min_tokens": 10}, "min_tokens"),
    ({"prompt": "The", "echo": "yes"}, "echo"),
    ({"prompt": "The", "prompt_logprobs": 21}, "prompt_logprobs"),
])
def test_invalid_prompts_and_stops(http, body, param):
    error = error_of(http.post("/v1/completions", json={"model": MODEL, "max_tokens": 4, **body}), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_invalid_streaming_request_is_a_json_error(client):
    """Validation happens before the event stream starts: a plain 400, not an SSE body."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="The", max_tokens=2, temperature=-1, stream=True)
    assert caught.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}],
                                       stream=True)
    assert caught.value.code == "model_not_found"


def test_invalid_chat_logprobs(client):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages, logprobs=True, top_logprobs=30)
    assert caught.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages, temperature=-1)
    assert caught.value.param == "temperature"


def test_stream_options_without_stream(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="The", max_tokens=1,
                                  extra_body={"stream_options": {"include_usage": True}})
    assert caught.value.param == "stream_options"


def test_unknown_route(http):
    for method, path in (("GET", "/v1/nothing"), ("POST", "/v1/embeddings"), ("GET", "/")):
        error = error_of(http.request(method, path), 404)
        assert error["type"] == "invalid_request_error"


def test_wrong_method(http):
    for method, path in (("GET", "/v1/completions"), ("GET", "/v1/chat/completions"),
                         ("POST", "/v1/models"), ("DELETE", "/v1/completions"), ("POST", "/health")):
        error = error_of(http.request(method, path), 405)
        assert error["type"] == "invalid_request_error"


def test_body_too_large(limited):
    body = b'{"model": "tiny-qwen3-moe", "prompt": "' + b"a" * (4 * SMALL_BODY_LIMIT) + b'"}'
    with httpx.Client(base_url=limited.url, timeout=30) as raw:
        error = error_of(raw.post("/v1/completions", content=body,
                                  headers={"content-type": "application/json"}), 413)
        assert error["type"] == "invalid_request_error"
        # A body within the limit is served.
        small = raw.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 1})
        assert small.status_code == 200
    limited.assert_alive()


def test_body_over_default_limit(http):
    """The default server takes 8 MiB at most."""
    body = b'{"model": "tiny-qwen3-moe", "prompt": "' + b"a" * (9 << 20) + b'"}'
    error = error_of(http.post("/v1/completions", content=body, headers={"content-type": "application/json"}),
                     413)
    assert error["type"] == "invalid_request_error"


def test_server_survives_every_error(server, client, errors_before):
    server.assert_alive()
    response = client.completions.create(model=MODEL, prompt="The", max_tokens=4,
                                         extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 4
    chat = client.chat.completions.create(model=MODEL, max_tokens=4, extra_body={"ignore_eos": True},
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.usage.completion_tokens == 4
    after = read_metrics(server.url)
    for status in ("400", "404", "405", "413"):
        key = f'tidal_http_requests_total{{status="{status}"}}'
        assert after.get(key, 0) > errors_before.get(key, 0), key
    assert after.get('tidal_http_requests_total{status="500"}', 0) == 0
    assert after['tidal_num_requests_running{rank="0"}'] == 0
