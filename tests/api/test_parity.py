"""Greedy outputs through the API equal `tidal generate`'s and the transformers reference's."""

from __future__ import annotations

import pytest

from support import MODEL, cli_generate, extra

MAX_TOKENS = 24
# Fixture prompts of different kinds: one token, prose, blank lines, CJK, code, digits, a tab.
PROMPTS = [0, 1, 2, 3, 6, 7, 9]


@pytest.fixture(scope="module")
def cli_truth(reference):
    return {i: cli_generate(prompt=reference["prompts"][i]["text"], max_tokens=MAX_TOKENS) for i in PROMPTS}


@pytest.mark.parametrize("index", PROMPTS)
def test_greedy_completion_equals_cli_and_reference(client, reference, cli_truth, index):
    prompt = reference["prompts"][index]
    truth = cli_truth[index]
    # The CLI itself agrees with transformers; otherwise the comparison below proves little.
    assert truth["prompt_token_ids"] == prompt["prompt_token_ids"]
    assert truth["token_ids"] == prompt["greedy_token_ids"][:MAX_TOKENS]

    response = client.completions.create(
        model=MODEL, prompt=prompt["text"], max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"return_token_ids": True, "ignore_eos": True})
    choice = response.choices[0]
    assert extra(choice, "prompt_token_ids") == truth["prompt_token_ids"]
    assert extra(choice, "token_ids") == truth["token_ids"]
    assert choice.text == truth["text"]
    assert choice.finish_reason == truth["finish_reason"] == "length"
    assert response.usage.prompt_tokens == len(truth["prompt_token_ids"])
    assert response.usage.completion_tokens == MAX_TOKENS


@pytest.mark.parametrize("index", PROMPTS)
def test_greedy_stream_from_token_ids_equals_cli(client, reference, cli_truth, index):
    """The same through the other paths: the prompt as token ids, and streamed."""
    truth = cli_truth[index]
    text, ids = "", []
    for chunk in client.completions.create(
            model=MODEL, prompt=truth["prompt_token_ids"], max_tokens=MAX_TOKENS, temperature=0, stream=True,
            extra_body={"return_token_ids": True, "ignore_eos": True}):
        for choice in chunk.choices:
            text += choice.text
            ids += extra(choice, "token_ids") or []
    assert ids == truth["token_ids"]
    assert text == truth["text"]


def test_cli_prompt_token_ids_path(reference):
    """`tidal generate --prompt-token-ids` agrees with --prompt (the API's token-id prompts rely
    on the same engine path)."""
    prompt = reference["prompts"][8]
    truth = cli_generate(prompt_token_ids=prompt["prompt_token_ids"], max_tokens=MAX_TOKENS)
    assert truth["token_ids"] == prompt["greedy_token_ids"][:MAX_TOKENS]
