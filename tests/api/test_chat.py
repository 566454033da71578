"""/v1/chat/completions through the official OpenAI client: prompt rendering, shapes, usage,
streaming, n, stop, logprobs, and the template's options."""

from __future__ import annotations

import pytest

from support import EOS_IDS, MODEL, extra, tokenize

GREEDY = {"temperature": 0}
HELLO = [{"role": "user", "content": "Hello! Who are you?"}]
HELLO_RENDERED = "<|im_start|>user\nHello! Who are you?<|im_end|>\n<|im_start|>assistant\n"


def reference_prompt(reference, text):
    return next(p for p in reference["prompts"] if p["text"] == text)


def test_chat_prompt_is_the_qwen3_rendering(client, reference):
    """The rendered and tokenized chat prompt equals the reference prompt that is exactly the
    Qwen3 template's rendering of this message with add_generation_prompt."""
    expected = reference_prompt(reference, HELLO_RENDERED)
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1, **GREEDY,
                                              extra_body={"return_token_ids": True})
    choice = response.choices[0]
    assert extra(choice, "prompt_token_ids") == expected["prompt_token_ids"]
    assert response.usage.prompt_tokens == len(expected["prompt_token_ids"])


def test_chat_system_message_and_template_kwargs(client):
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is two plus two?"}]
    rendered = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n")
    choice = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, **GREEDY,
                                            extra_body={"return_token_ids": True}).choices[0]
    assert extra(choice, "prompt_token_ids") == tokenize(rendered)
    # Qwen3's template closes an empty think block when thinking is off.
    no_think = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=1, **GREEDY,
        extra_body={"return_token_ids": True,
                    "chat_template_kwargs": {"enable_thinking": False}}).choices[0]
    assert extra(no_think, "prompt_token_ids") == tokenize(rendered + "<think>\n\n</think>\n\n")
    # add_generation_prompt=false leaves the assistant header off.
    no_header = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=1, **GREEDY,
        extra_body={"return_token_ids": True, "add_generation_prompt": False}).choices[0]
    assert extra(no_header, "prompt_token_ids") == tokenize(rendered[: -len("<|im_start|>assistant\n")])


def test_chat_greedy_matches_reference(client, reference):
    expected = reference_prompt(reference, HELLO_RENDERED)
    greedy = expected["greedy_token_ids"]
    eos_at = next(i for i, t in enumerate(greedy) if t in EOS_IDS)
    ignored = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, **GREEDY,
                                             extra_body={"return_token_ids": True, "ignore_eos": True})
    choice = ignored.choices[0]
    assert extra(choice, "token_ids") == greedy[:24]
    assert choice.finish_reason == "length"
    stopped = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32, **GREEDY,
                                             extra_body={"return_token_ids": True}).choices[0]
    assert stopped.finish_reason == "stop"
    assert extra(stopped, "token_ids")[:eos_at] == greedy[:eos_at]
    assert len(extra(stopped, "token_ids")) <= eos_at + 1
    assert "<|im_end|>" not in stopped.message.content  # special tokens are skipped


def test_chat_shape_and_usage(client):
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, **GREEDY,
                                              extra_body={"ignore_eos": True})
    assert response.object == "chat.completion"
    assert response.model == MODEL
    assert response.id
    choice = response.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage.prompt_tokens == 16
    assert response.usage.completion_tokens == 8
    assert response.usage.total_tokens == 24


def test_chat_max_completion_tokens(client):
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=4,
                                              extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 4
    assert response.choices[0].finish_reason == "length"


def test_chat_streaming_matches_non_streaming(client):
    kwargs = dict(model=MODEL, messages=HELLO, max_tokens=12, **GREEDY,
                  extra_body={"ignore_eos": True, "return_token_ids": True})
    full = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant"
    content, ids, finish = "", [], None
    for chunk in chunks:
        assert chunk.usage is None
        for choice in chunk.choices:
            assert finish is None, "a chunk came after the finishing one"
            content += choice.delta.content or ""
            ids += extra(choice, "token_ids") or []
            finish = choice.finish_reason
    assert finish == "length"
    assert content == full.message.content
    assert ids == extra(full, "token_ids")


def test_chat_streaming_include_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    *body, last = chunks
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (16, 5, 21)
    assert all(chunk.usage is None for chunk in body)
    assert body[-1].choices[0].finish_reason == "length"


def test_chat_n_2(client):
    # The fixture answers "Hello! Who are you?" with near certainty; this message leaves room.
    messages = [{"role": "user", "content": "The"}]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, n=2,
                                              temperature=1.0, seed=11, extra_body={"ignore_eos": True})
    assert [c.index for c in response.choices] == [0, 1]
    assert all(c.finish_reason == "length" and c.message.role == "assistant" for c in response.choices)
    assert response.usage.completion_tokens == 32
    assert response.usage.prompt_tokens == len(tokenize("<|im_start|>user\nThe<|im_end|>\n<|im_start|>assistant\n"))
    # Choice i draws with seed + i: each equals a single request of that seed.
    for i, choice in enumerate(response.choices):
        alone = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16,
                                               temperature=1.0, seed=11 + i,
                                               extra_body={"ignore_eos": True})
        assert alone.choices[0].message.content == choice.message.content, i
    # Seeds 11 and 12 happen to draw the same answer under the fixture's top-k/top-p; 13 and 14
    # do not, so n seeded choices are not copies of one draw.
    other = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, n=2,
                                           temperature=1.0, seed=13, extra_body={"ignore_eos": True})
    assert other.choices[0].message.content != other.choices[1].message.content


def test_chat_stop_string(client):
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, **GREEDY,
                                          extra_body={"ignore_eos": True}).choices[0].message.content
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = full.index(stop)
    choice = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, stop=[stop],
                                            **GREEDY, extra_body={"ignore_eos": True}).choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == full[:cut]


def test_chat_logprobs(client):
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, logprobs=True,
                                              top_logprobs=3, **GREEDY, extra_body={"ignore_eos": True})
    choice = response.choices[0]
    content = choice.logprobs.content
    assert len(content) == 6
    assert "".join(entry.token for entry in content) == choice.message.content
    for entry in content:
        assert entry.logprob <= 0
        assert bytes(entry.bytes) == entry.token.encode()
        assert len(entry.top_logprobs) == 3
        top = [alt.logprob for alt in entry.top_logprobs]
        assert top == sorted(top, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)


def test_chat_logprobs_off_by_default(client):
    choice = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices[0]
    assert choice.logprobs is None


def test_chat_logprobs_without_top(client):
    choice = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3, logprobs=True,
                                            extra_body={"ignore_eos": True}).choices[0]
    assert len(choice.logprobs.content) == 3
    assert all(entry.top_logprobs == [] for entry in choice.logprobs.content)


def test_chat_content_parts(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello! "},
                                          {"type": "text", "text": "Who are you?"}]}]
    ids = [extra(client.chat.completions.create(model=MODEL, messages=m, max_tokens=1,
                                                extra_body={"return_token_ids": True}).choices[0],
                 "prompt_token_ids") for m in (parts, HELLO)]
    assert ids[0] == ids[1]


def test_chat_tools_reach_the_template(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    # "none": the template gets the tools, the answer stays text (no --tool-call-parser here).
    choice = client.chat.completions.create(model=MODEL, messages=HELLO, tools=tools, max_tokens=1,
                                            tool_choice="none",
                                            extra_body={"return_token_ids": True}).choices[0]
    prompt = extra(choice, "prompt_token_ids")
    plain = tokenize(HELLO_RENDERED)
    assert len(prompt) > len(plain)
    assert prompt[-len(tokenize("<|im_end|>\n<|im_start|>assistant\n")):] == tokenize(
        "<|im_end|>\n<|im_start|>assistant\n")
    assert set(tokenize("get_weather")) <= set(prompt)
