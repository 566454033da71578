"""/v1/completions through the official OpenAI client: shapes, usage, streaming, n, stop
conditions, logprobs, token ids, and sampling controls."""

from __future__ import annotations

import math

import pytest

from support import EOS_IDS, MODEL, extra, tokenize

GREEDY = {"temperature": 0}


def greedy_ids(client, prompt, max_tokens=24) -> list[int]:
    response = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, **GREEDY,
        extra_body={"return_token_ids": True, "ignore_eos": True})
    return extra(response.choices[0], "token_ids")


def test_completion_shape_and_usage(client):
    response = client.completions.create(model=MODEL, prompt="The tide", max_tokens=8,
                                         extra_body={"ignore_eos": True})
    assert response.object == "text_completion"
    assert response.model == MODEL
    assert response.id
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.index == 0
    assert isinstance(choice.text, str) and choice.text
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    usage = response.usage
    assert usage.prompt_tokens == len(tokenize("The tide"))
    assert usage.completion_tokens == 8
    assert usage.total_tokens == usage.prompt_tokens + 8


def test_default_max_tokens_is_16(client):
    response = client.completions.create(model=MODEL, prompt="The", extra_body={"ignore_eos": True})
    assert response.usage.completion_tokens == 16
    assert response.choices[0].finish_reason == "length"


def test_max_tokens_gives_length(client):
    response = client.completions.create(model=MODEL, prompt="The", max_tokens=5, **GREEDY,
                                         extra_body={"ignore_eos": True, "return_token_ids": True})
    choice = response.choices[0]
    assert choice.finish_reason == "length"
    assert len(extra(choice, "token_ids")) == 5
    assert response.usage.completion_tokens == 5


def test_prompt_forms_agree(client, reference):
    """A text, its token ids, a list of texts, and a list of token-id lists give the same
    greedy continuation, and a list of prompts gives one choice per prompt in order."""
    a, b = reference["prompts"][0], reference["prompts"][6]
    body = {"max_tokens": 6, **GREEDY, "extra_body": {"return_token_ids": True, "ignore_eos": True}}
    expected_a = a["greedy_token_ids"][:6]
    expected_b = b["greedy_token_ids"][:6]
    for prompt in (a["text"], a["prompt_token_ids"]):
        choice = client.completions.create(model=MODEL, prompt=prompt, **body).choices[0]
        assert extra(choice, "token_ids") == expected_a
        assert extra(choice, "prompt_token_ids") == a["prompt_token_ids"]
    for prompts in ([a["text"], b["text"]], [a["prompt_token_ids"], b["prompt_token_ids"]]):
        response = client.completions.create(model=MODEL, prompt=prompts, **body)
        assert [c.index for c in response.choices] == [0, 1]
        assert [extra(c, "token_ids") for c in response.choices] == [expected_a, expected_b]
        assert response.usage.prompt_tokens == len(a["prompt_token_ids"]) + len(b["prompt_token_ids"])
        assert response.usage.completion_tokens == 12


def test_streaming_matches_non_streaming(client):
    kwargs = dict(model=MODEL, prompt="The lighthouse", max_tokens=12, **GREEDY,
                  extra_body={"return_token_ids": True, "ignore_eos": True})
    full = client.completions.create(**kwargs).choices[0]
    text, ids, finish, chunks = "", [], None, 0
    for chunk in client.completions.create(stream=True, **kwargs):
        assert chunk.object == "text_completion"
        assert chunk.model == MODEL
        assert chunk.usage is None  # only with stream_options.include_usage
        for choice in chunk.choices:
            assert choice.index == 0
            assert finish is None, "a chunk came after the finishing one"
            text += choice.text
            ids += extra(choice, "token_ids") or []
            finish = choice.finish_reason
        chunks += 1
    assert chunks >= 2, "a stream of 12 tokens arrived in one chunk"
    assert finish == "length"
    assert text == full.text
    assert ids == extra(full, "token_ids")


def test_streaming_include_usage(client):
    stream = client.completions.create(model=MODEL, prompt="The", max_tokens=7, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(stream)
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 1
    assert last.usage.completion_tokens == 7
    assert last.usage.total_tokens == 8
    assert body and all(chunk.usage is None for chunk in body)
    assert body[-1].choices[0].finish_reason == "length"


def test_n_2(client):
    response = client.completions.create(model=MODEL, prompt="The", max_tokens=10, n=2,
                                         temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert [c.index for c in response.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in response.choices)
    assert response.usage.prompt_tokens == 1  # the prompt counts once however many choices
    assert response.usage.completion_tokens == 20
    # Seeded choices of one request get different seeds, so they differ.
    assert response.choices[0].text != response.choices[1].text


def test_n_2_streaming(client):
    texts, finishes = {0: "", 1: ""}, {}
    for chunk in client.completions.create(model=MODEL, prompt="The", max_tokens=6, n=2, stream=True,
                                           **GREEDY, extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert texts[0] == texts[1] != ""  # greedy: both choices are the same continuation


def test_stop_string(client):
    full = client.completions.create(model=MODEL, prompt="The", max_tokens=24, **GREEDY,
                                     extra_body={"ignore_eos": True}).choices[0].text
    # The greedy continuation is " sea below was calm and grey, ...": stop at a word in its
    # middle, chosen from the text itself so the test follows the model.
    words = full.split()
    assert len(words) >= 6, full
    stop = " " + words[3]
    cut = full.index(stop)
    assert cut > 0
    for stream in (False, True):
        if stream:
            text, finish = "", None
            for chunk in client.completions.create(model=MODEL, prompt="The", max_tokens=24, stop=[stop],
                                                   stream=True, **GREEDY, extra_body={"ignore_eos": True}):
                for choice in chunk.choices:
                    text += choice.text
                    finish = choice.finish_reason or finish
        else:
            choice = client.completions.create(model=MODEL, prompt="The", max_tokens=24, stop=stop,
                                               **GREEDY, extra_body={"ignore_eos": True}).choices[0]
            text, finish = choice.text, choice.finish_reason
        assert text == full[:cut], f"stream={stream}"
        assert finish == "stop", f"stream={stream}"


def test_stop_token_ids(client, reference):
    prompt = reference["prompts"][0]
    greedy = prompt["greedy_token_ids"]
    stop_id = greedy[5]
    assert stop_id not in greedy[:5]
    choice = client.completions.create(
        model=MODEL, prompt=prompt["text"], max_tokens=24, **GREEDY,
        extra_body={"ignore_eos": True, "stop_token_ids": [stop_id], "return_token_ids": True}).choices[0]
    assert choice.finish_reason == "stop"
    assert extra(choice, "token_ids")[:5] == greedy[:5]
    assert len(extra(choice, "token_ids")) <= 6


def test_eos_stops_unless_ignored(client, reference):
    # Reference prompt 8's greedy continuation hits EOS at its third token.
    prompt = reference["prompts"][8]
    greedy = prompt["greedy_token_ids"]
    eos_at = next(i for i, t in enumerate(greedy) if t in EOS_IDS)
    stopped = client.completions.create(model=MODEL, prompt=prompt["text"], max_tokens=24, **GREEDY,
                                        extra_body={"return_token_ids": True}).choices[0]
    assert stopped.finish_reason == "stop"
    assert extra(stopped, "token_ids")[:eos_at] == greedy[:eos_at]
    assert len(extra(stopped, "token_ids")) <= eos_at + 1
    ignored = client.completions.create(model=MODEL, prompt=prompt["text"], max_tokens=24, **GREEDY,
                                        extra_body={"return_token_ids": True, "ignore_eos": True}).choices[0]
    assert ignored.finish_reason == "length"
    assert extra(ignored, "token_ids") == greedy[:24]
    min_tokens = client.completions.create(model=MODEL, prompt=prompt["text"], max_tokens=24, **GREEDY,
                                           extra_body={"return_token_ids": True, "min_tokens": 8}).choices[0]
    assert len(extra(min_tokens, "token_ids")) >= 8


def test_return_token_ids(client, reference):
    prompt = reference["prompts"][7]
    choice = client.completions.create(
        model=MODEL, prompt=prompt["text"], max_tokens=10, **GREEDY,
        extra_body={"return_token_ids": True, "ignore_eos": True}).choices[0]
    assert extra(choice, "prompt_token_ids") == prompt["prompt_token_ids"]
    assert extra(choice, "token_ids") == prompt["greedy_token_ids"][:10]
    # Without the flag, neither field is sent.
    plain = client.completions.create(model=MODEL, prompt=prompt["text"], max_tokens=2, **GREEDY).choices[0]
    assert extra(plain, "prompt_token_ids") is None and extra(plain, "token_ids") is None


def test_top_k_1_is_greedy(client, reference):
    """top_k through extra_body reaches the sampler: at temperature 1, top_k=1 must give the
    greedy tokens whatever the seed, where unrestricted sampling does not."""
    prompt = reference["prompts"][0]  # its first token is uncertain (top logprob -2.26)
    expected = prompt["greedy_token_ids"][:16]
    for seed in (1, 2, 3):
        response = client.completions.create(
            model=MODEL, prompt=prompt["text"], max_tokens=16, temperature=1.0, seed=seed,
            extra_body={"top_k": 1, "return_token_ids": True, "ignore_eos": True})
        assert extra(response.choices[0], "token_ids") == expected
    sampled = [extra(client.completions.create(
        model=MODEL, prompt=prompt["text"], max_tokens=16, temperature=1.0, seed=seed, top_p=1.0,
        extra_body={"top_k": 0, "return_token_ids": True, "ignore_eos": True}).choices[0], "token_ids")
        for seed in (1, 2, 3)]
    assert any(ids != expected for ids in sampled)


def test_seeded_sampling_is_reproducible(client):
    def sample(seed):
        return client.completions.create(model=MODEL, prompt="The", max_tokens=16, temperature=1.0,
                                         seed=seed, extra_body={"ignore_eos": True,
                                                                "return_token_ids": True}).choices[0]
    first, again, other = sample(1234), sample(1234), sample(4321)
    assert extra(first, "token_ids") == extra(again, "token_ids")
    assert first.text == again.text
    assert extra(first, "token_ids") != extra(other, "token_ids")


def test_logprobs(client, reference):
    prompt = reference["prompts"][0]
    response = client.completions.create(model=MODEL, prompt=prompt["text"], max_tokens=6, logprobs=3,
                                         **GREEDY, extra_body={"ignore_eos": True, "return_token_ids": True})
    choice = response.choices[0]
    lp = choice.logprobs
    assert lp is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    for i, (token, logprob, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
        assert 1 <= len(top) <= 3
        assert logprob <= 0
        # Greedy: the chosen token is the most likely one.
        assert logprob == pytest.approx(max(top.values()), abs=1e-5)
        assert top[token] == pytest.approx(logprob, abs=1e-5)
        # The transformers reference's top-1 logprob, within the f32-vs-reference tolerance.
        ref_id, ref_logprob = prompt["top_logprobs"][i][0]
        assert extra(choice, "token_ids")[i] == ref_id
        assert logprob == pytest.approx(ref_logprob, abs=2e-2)


def test_logprobs_zero(client):
    choice = client.completions.create(model=MODEL, prompt="The", max_tokens=3, logprobs=0,
                                       extra_body={"ignore_eos": True}).choices[0]
    assert len(choice.logprobs.token_logprobs) == 3
    assert all(math.isfinite(x) and x <= 0 for x in choice.logprobs.token_logprobs)


def test_logprobs_streaming(client):
    tokens, logprobs = [], []
    text = ""
    for chunk in client.completions.create(model=MODEL, prompt="The", max_tokens=5, logprobs=2, stream=True,
                                           **GREEDY, extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens
                logprobs += choice.logprobs.token_logprobs
    assert len(tokens) == len(logprobs) == 5
    assert "".join(tokens) == text
