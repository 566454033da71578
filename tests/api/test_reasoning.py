"""--reasoning-parser qwen3|deepseek_r1: a chat answer's thinking in reasoning_content, whole and
streamed, against the same answer from a server without the parser."""

from __future__ import annotations

import subprocess

import openai
import pytest

from support import BINARY, MODEL, start_server

MESSAGES = [{"role": "user", "content": "Why are there two tides a day?"}]
# The fixture's greedy answer to this one opens and closes a thinking block itself, so the tags
# are parsed from what the model wrote, not only routed by where the answer starts.
TAGGED = [{"role": "user", "content": "hi"}]
# A template whose prompt ends inside an opened thinking block, as thinking-only models' do.
OPENED_THINKING_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}" \
                           "<|im_end|>\n{% endfor %}<|im_start|>assistant\n<think>\n"


def split_reference(answer: str, thinking_first: bool) -> tuple[str | None, str | None]:
    """The rule of src/server/reasoning_parser.h, written again: (reasoning, content)."""
    if answer.startswith("<think>"):
        answer, thinking_first = answer[len("<think>"):], True
    if not thinking_first:
        return None, answer or None
    reasoning, closed, content = answer.partition("</think>")
    return reasoning or None, (content if closed else "") or None


def ask(client: openai.OpenAI, stream: bool, messages=MESSAGES, **extra):
    request = dict(model=MODEL, messages=messages, max_tokens=16, temperature=0,
                   extra_body={"ignore_eos": True, **extra})
    if not stream:
        message = client.chat.completions.create(**request).choices[0].message
        return (message.model_extra or {}).get("reasoning_content"), message.content
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
    return reasoning or None, content or None


@pytest.fixture(scope="module", params=["qwen3", "deepseek_r1"])
def parsed(request):
    with start_server("--reasoning-parser", request.param, "--trust-request-chat-template") as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                           timeout=60) as client:
            yield request.param, client


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("template", [None, OPENED_THINKING_TEMPLATE])
def test_thinking_is_separated(client, parsed, stream, template):
    syntax, parsed_client = parsed
    extra = {"chat_template": template} if template else {}
    # The answer itself, from the shared server without a parser (greedy: the same tokens).
    reasoning, answer = ask(client, stream=False, **extra)
    assert reasoning is None and answer
    thinking_first = syntax == "deepseek_r1" or template is not None
    assert ask(parsed_client, stream, **extra) == split_reference(answer, thinking_first)


@pytest.mark.parametrize("stream", [False, True])
def test_disabled_thinking_is_content(client, parsed, stream):
    syntax, parsed_client = parsed
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    _, answer = ask(client, stream=False, **off)
    expected = split_reference(answer, thinking_first=syntax == "deepseek_r1")
    assert ask(parsed_client, stream, **off) == expected
    if syntax == "qwen3":
        assert expected == (None, answer)


def test_completions_are_not_parsed(client, parsed):
    _, parsed_client = parsed
    request = dict(model=MODEL, prompt="<think>x</think>", max_tokens=8, temperature=0,
                   extra_body={"ignore_eos": True})
    expected = client.completions.create(**request).choices[0].text
    assert parsed_client.completions.create(**request).choices[0].text == expected


def test_an_unknown_parser_is_refused():
    result = subprocess.run([str(BINARY), "serve", "--reasoning-parser", "r2"],
                            capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "--reasoning-parser" in result.stderr.decode() + result.stdout.decode()


@pytest.mark.parametrize("stream", [False, True])
def test_tags_the_model_writes_are_parsed(client, parsed, stream):
    syntax, parsed_client = parsed
    _, answer = ask(client, stream=False, messages=TAGGED)
    assert answer.startswith("<think>") and "</think>" in answer, answer
    reasoning, content = ask(parsed_client, stream, messages=TAGGED)
    assert (reasoning, content) == split_reference(answer, syntax == "deepseek_r1")
    assert "<think>" not in (content or "") and "</think>" not in (reasoning or "")
