"""Tools: tool_choice "auto" needs --tool-call-parser hermes; with it, answers pass through the
call parser (whole and streamed) and a tool round trip renders as transformers renders it.

The tiny fixture model writes no <tool_call> block of its own, so the parsing of real calls is
proven by tests/server/tool_call_parser_test.cpp (every cut of a stream); here the plumbing."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from support import MODEL, SOURCE_DIR, start_server, tokenize

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def hermes():
    with start_server("--tool-call-parser", "hermes") as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                           timeout=60) as client:
            yield server, client


def test_auto_needs_the_parser(client):
    for choice in (openai.NOT_GIVEN, "auto"):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=1,
                                           tool_choice=choice)
        assert raised.value.body["param"] == "tool_choice"
        assert "--tool-call-parser hermes" in raised.value.body["message"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_calls_are_refused_by_name(hermes, choice):
    _, client = hermes
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=1,
                                       tool_choice=choice)
    assert raised.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_without_calls_is_content(client, hermes, stream):
    _, parsed = hermes
    request = dict(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=12, temperature=0,
                   extra_body={"ignore_eos": True})
    # The same prompt (tools in the template either way), answered as plain text.
    answer = client.chat.completions.create(tool_choice="none", **request).choices[0]
    assert "<tool_call>" not in answer.message.content
    if not stream:
        choice = parsed.chat.completions.create(tool_choice="auto", **request).choices[0]
        assert choice.message.content == answer.message.content
        assert not choice.message.tool_calls
        assert choice.finish_reason == "length"
        return
    content, finish = "", None
    for chunk in parsed.chat.completions.create(tool_choice="auto", stream=True, **request):
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert content == answer.message.content and finish == "length"


def test_a_tool_round_trip_renders_as_transformers_does(hermes):
    server, client = hermes
    cases = json.loads((SOURCE_DIR / "tests/fixtures/chat_templates/fixture.expected.json").read_text())
    case = next(c for c in cases if any(m.get("tool_calls") for m in c["messages"]))
    # As an OpenAI client sends it: arguments as a JSON string.
    messages = json.loads(json.dumps(case["messages"]))
    for message in messages:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"],
                                                       ensure_ascii=False)
    body = httpx.post(server.url + "/tokenize", json={
        "messages": messages, "tools": case["extra"]["tools"],
        "add_generation_prompt": case["add_generation_prompt"]}, timeout=30).json()
    assert body["tokens"] == tokenize(case["rendered"])
    # And the conversation is answered, with the tool result fed back: its prompt is the same
    # rendering up to the tool result, then the generation prompt.
    upto_tool = httpx.post(server.url + "/tokenize", timeout=30, json={
        "messages": messages[:3], "tools": case["extra"]["tools"]}).json()["tokens"]
    reply = client.chat.completions.create(model=MODEL, messages=messages[:3],
                                           tools=case["extra"]["tools"], max_tokens=4,
                                           extra_body={"return_token_ids": True})
    assert reply.choices[0].model_extra["prompt_token_ids"] == upto_tool
    prompt = httpx.post(server.url + "/detokenize", timeout=30, json={"tokens": upto_tool}).json()
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in prompt["prompt"]
