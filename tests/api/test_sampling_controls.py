"""logit_bias, presence/frequency penalties, min_p, allowed_token_ids and bad_words through the
openai SDK, on one rank and across rank processes. The draw's arithmetic is the CPU reference's
(tests/engine/sampler_test.cpp); here each control is checked end to end against what it must do,
frequency and presence penalties against an independent re-derivation."""

from __future__ import annotations

import math
from collections import Counter

import openai
import pytest

from support import MODEL, start_server

PROMPT = "The lighthouse keeper counted the ships"
REPEATING = "1, 2, 3,"  # the fixture's greedy answer to it repeats tokens from the fourth on
# A prompt whose greedy answer repeats a token by a margin small enough for penalties within
# [-2, 2] to change it (the random fixture's logits are mostly far apart): from the 8th token.
CLOSE_REPEAT = "We went to the market and"


def completion(client, **kwargs):
    extra = {"ignore_eos": True, "return_token_ids": True, **kwargs.pop("extra_body", {})}
    request = dict(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, extra_body=extra)
    request.update(kwargs)
    return client.completions.create(**request).choices[0]


def ids_of(choice) -> list[int]:
    return choice.model_extra["token_ids"]


@pytest.fixture(scope="module")
def two_ranks():
    with start_server("--ranks", "2") as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                           timeout=60) as client:
            yield client


def test_a_large_bias_forces_a_token(client):
    forced = ids_of(completion(client, max_tokens=1))[0] + 1
    choice = completion(client, logit_bias={str(forced): 100})
    assert ids_of(choice) == [forced] * 12


def test_a_negative_bias_bans_the_greedy_token_and_keeps_raw_logprobs(client):
    plain = completion(client, max_tokens=1, logprobs=2)
    first = ids_of(plain)[0]
    biased = completion(client, max_tokens=1, logprobs=2, logit_bias={str(first): -100})
    assert ids_of(biased)[0] != first
    # Logprobs are the model's own: the banned token is still the most likely one there.
    assert biased.logprobs.top_logprobs[0] == plain.logprobs.top_logprobs[0]
    assert max(biased.logprobs.top_logprobs[0].values()) == plain.logprobs.token_logprobs[0]


@pytest.mark.parametrize("frequency, presence", [(1.5, 0.0), (0.0, 1.5), (0.7, 0.6)])
def test_frequency_and_presence_penalties_as_derived_step_by_step(client, frequency, presence):
    prompt_ids = completion(client, prompt=CLOSE_REPEAT, max_tokens=1).model_extra["prompt_token_ids"]
    penalized = ids_of(completion(client, prompt=CLOSE_REPEAT, max_tokens=12,
                                  frequency_penalty=frequency, presence_penalty=presence))
    plain = ids_of(completion(client, prompt=CLOSE_REPEAT, max_tokens=12))
    assert penalized != plain, "the penalty changed nothing"
    # A frequency or presence penalty is a bias of -(f * count + p) on every id of the output so
    # far: each step again, from the prompt and the tokens before it, with that bias.
    for step in range(len(penalized)):
        counts = Counter(penalized[:step])
        bias = {str(i): -(frequency * c + presence) for i, c in counts.items()}
        one = client.completions.create(model=MODEL, prompt=prompt_ids + penalized[:step],
                                        max_tokens=1, temperature=0, logit_bias=bias,
                                        extra_body={"ignore_eos": True, "return_token_ids": True})
        assert ids_of(one.choices[0]) == [penalized[step]], step


def test_repetition_penalty_changes_the_greedy_tokens(client):
    plain = ids_of(completion(client, prompt=REPEATING, max_tokens=16))
    assert len(set(plain)) < len(plain), "the fixture's greedy answer repeats itself"
    penalized = ids_of(completion(client, prompt=REPEATING, max_tokens=16,
                                  extra_body={"repetition_penalty": 3.0}))
    assert penalized != plain


def test_min_p_keeps_only_tokens_near_the_best(client):
    def drawn(min_p):
        return completion(client, max_tokens=24, temperature=1.0, seed=7, logprobs=1,
                          extra_body={"min_p": min_p}).logprobs
    # At temperature 1, min_p keeps a token when its logprob is within log(min_p) of the best.
    def below(logprobs, min_p):
        return [i for i, (lp, top) in enumerate(zip(logprobs.token_logprobs, logprobs.top_logprobs))
                if lp < max(top.values()) + math.log(min_p) - 1e-4]
    assert below(drawn(0.0), 0.5), "without min_p some draws are far from the best"
    assert below(drawn(0.5), 0.5) == []


def test_allowed_token_ids_bound_every_draw(client):
    allowed = sorted(set(ids_of(completion(client, max_tokens=4))))[:2] + [17, 23]
    choice = completion(client, max_tokens=16, temperature=1.0, seed=3,
                        extra_body={"allowed_token_ids": allowed})
    assert set(ids_of(choice)) <= set(allowed)


def test_bad_words_are_never_written(client, http):
    plain = completion(client, max_tokens=12)
    word = plain.text.split()[0]
    choice = completion(client, max_tokens=12, extra_body={"bad_words": [word]})
    banned = {tuple(http.post("/tokenize", json={"prompt": text}).json()["tokens"])
              for text in (word, " " + word)}
    ids = ids_of(choice)
    for sequence in banned:
        n = len(sequence)
        assert all(tuple(ids[i:i + n]) != sequence for i in range(len(ids) - n + 1)), sequence
    assert ids != ids_of(plain)


def test_the_controls_cross_rank_processes(client, two_ranks):
    """The parameters travel to the ranks: two ranks draw what one does."""
    for kwargs in ({"logit_bias": {"40": 100}},
                   {"prompt": CLOSE_REPEAT, "frequency_penalty": 1.5, "presence_penalty": 0.5},
                   {"extra_body": {"repetition_penalty": 2.0, "bad_words": ["the"]}},
                   {"temperature": 1.0, "seed": 11, "extra_body": {"min_p": 0.3,
                                                                   "allowed_token_ids": [5, 40, 41]}}):
        assert ids_of(completion(two_ranks, **kwargs)) == ids_of(completion(client, **kwargs)), kwargs


@pytest.mark.parametrize("field, value", [
    ("presence_penalty", 2.5), ("frequency_penalty", -3), ("repetition_penalty", 0),
    ("min_p", 1.5), ("logit_bias", {"abc": 1}), ("logit_bias", {"99999999": 1}),
    ("allowed_token_ids", []), ("bad_words", [""]),
])
def test_bad_values_name_the_field(http, field, value):
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 1,
                                                   field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
