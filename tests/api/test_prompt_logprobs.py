"""echo and prompt_logprobs: the prompt's logprobs, as evaluation harnesses score loglikelihoods
(lm-evaluation-harness's local-completions sends echo with logprobs), equal to what generating
from each prefix reports for the same token, whatever the chunking and the number of ranks."""

from __future__ import annotations

import math

import openai
import pytest

from support import MODEL, start_server

PROMPT = "The lighthouse keeper counted twelve ships before the storm reached the harbour wall"


def echo(client, prompt=PROMPT, logprobs=2, **kwargs):
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0,
                                     echo=True, logprobs=logprobs,
                                     extra_body={"return_token_ids": True, **kwargs}).choices[0]


def test_echo_without_logprobs_prepends_the_prompt(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    echoed = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0,
                                       echo=True)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text


def test_echoed_logprobs_equal_generating_from_each_prefix(client):
    choice = echo(client)
    prompt_ids = choice.model_extra["prompt_token_ids"]
    lp = choice.logprobs
    assert len(lp.tokens) == len(prompt_ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert "".join(lp.tokens) == choice.text
    for i in range(1, len(prompt_ids)):
        # The prefix's next token, forced, reports its raw logprob.
        forced = client.completions.create(
            model=MODEL, prompt=prompt_ids[:i], max_tokens=1, temperature=0, logprobs=2,
            extra_body={"allowed_token_ids": [prompt_ids[i]], "return_token_ids": True}).choices[0]
        assert forced.model_extra["token_ids"] == [prompt_ids[i]]
        assert math.isclose(lp.token_logprobs[i], forced.logprobs.token_logprobs[0],
                            rel_tol=0, abs_tol=2e-5), i
        assert lp.top_logprobs[i] == pytest.approx(forced.logprobs.top_logprobs[0], abs=2e-5)


def test_prompt_logprobs_field_in_vllms_shape(client):
    for stream in (False, True):
        request = dict(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0,
                       extra_body={"prompt_logprobs": 3, "return_token_ids": True})
        if stream:
            chunks = list(client.completions.create(stream=True, **request))
            entries = [c.choices[0].model_extra.get("prompt_logprobs") for c in chunks]
            assert entries[0] is not None and all(e is None for e in entries[1:])
            prompt_logprobs = entries[0]
        else:
            prompt_logprobs = client.completions.create(**request).choices[0].model_extra[
                "prompt_logprobs"]
        reference = echo(client, logprobs=3)
        prompt_ids = reference.model_extra["prompt_token_ids"]
        assert len(prompt_logprobs) == len(prompt_ids) and prompt_logprobs[0] is None
        for i in range(1, len(prompt_ids)):
            entry = prompt_logprobs[i][str(prompt_ids[i])]
            assert entry["logprob"] == pytest.approx(reference.logprobs.token_logprobs[i], abs=1e-6)
            ranks = sorted(v["rank"] for v in prompt_logprobs[i].values() if v["rank"] is not None)
            assert ranks[:3] == [1, 2, 3]


def test_chat_prompt_logprobs(client):
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a tide."}], max_tokens=1,
        extra_body={"prompt_logprobs": 0, "return_token_ids": True}).choices[0]
    prompt_ids = chat.model_extra["prompt_token_ids"]
    entries = chat.model_extra["prompt_logprobs"]
    assert len(entries) == len(prompt_ids) and entries[0] is None
    assert all(str(prompt_ids[i]) in entries[i] for i in range(1, len(prompt_ids)))


def test_a_loglikelihood_request_as_lm_eval_sends_it(client):
    """Context + continuation, echo, logprobs=1, max_tokens=1: the continuation's logprob is the
    sum over its tokens, and it is greedy when each token is its position's most likely one."""
    context, continuation = "The lighthouse keeper counted", " twelve ships"
    choice = echo(client, prompt=context + continuation, logprobs=1)
    n_context = len(echo(client, prompt=context, logprobs=1).model_extra["prompt_token_ids"])
    lp = choice.logprobs
    scored = lp.token_logprobs[n_context:-1]
    assert len(scored) == len(choice.model_extra["prompt_token_ids"]) - n_context
    assert all(s is not None and s <= 0 for s in scored)
    greedy = [s == max(top.values()) for s, top in zip(scored, lp.top_logprobs[n_context:-1])]
    assert len(greedy) == len(scored)


@pytest.mark.parametrize("args", [("--max-num-batched-tokens", "8"), ("--ranks", "2")])
def test_chunks_and_ranks_do_not_change_prompt_logprobs(client, args):
    reference = echo(client).logprobs
    with start_server(*args) as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as other:
            got = echo(other).logprobs
    assert got.tokens == reference.tokens
    assert got.token_logprobs[0] is None
    assert got.token_logprobs[1:] == pytest.approx(reference.token_logprobs[1:], abs=2e-5)
