"""Structured output through the openai SDK: response_format (json_schema, json_object) and vLLM's
guided_json / guided_regex / guided_choice / guided_grammar / structured_outputs, decoded under
xgrammar's token masks on the CPU reference. Sampled outputs (temperature 1, seeded) must parse
and validate for every seed: the tiny model's free choice would almost never do so on its own."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

from support import MODEL

# Bounded in every direction, so that an answer always completes within max_tokens.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "member", "color"],
    "additionalProperties": False,
}
SEEDS = range(50)
MAX_TOKENS = 64


def constrained(client, seed, stream=False, **fields):
    """The text of one sampled completion under `fields` (finish_reason checked: stop)."""
    request = dict(model=MODEL, prompt="Record:", max_tokens=MAX_TOKENS, temperature=1.0,
                   seed=seed, stream=stream)
    # The SDK's completions take none of these as arguments: they go in the body as they are.
    extra = {key: fields.pop(key) for key in list(fields)
             if key.startswith(("guided_", "structured_", "response_format"))}
    if extra:
        request["extra_body"] = extra
    request.update(fields)
    if not stream:
        choice = client.completions.create(**request).choices[0]
        assert choice.finish_reason == "stop", (seed, choice.text)
        return choice.text
    text, finish = "", None
    for chunk in client.completions.create(**request):
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
    assert finish == "stop", (seed, text)
    return text


def test_json_schema_output_validates_for_every_seed(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}}
    texts = set()
    for seed in SEEDS:
        text = constrained(client, seed, response_format=response_format)
        jsonschema.validate(json.loads(text), SCHEMA)
        # The properties come in the schema's order.
        assert list(json.loads(text)) == list(SCHEMA["properties"]), text
        texts.add(text)
    assert len(texts) > 25, "the seeds did not sample different answers"


def test_json_schema_streamed_equals_whole(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}}
    for seed in (3, 17):
        whole = constrained(client, seed, response_format=response_format)
        assert constrained(client, seed, stream=True, response_format=response_format) == whole


def test_chat_json_schema_and_json_object(client):
    messages = [{"role": "user", "content": "Give me a record."}]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=1.0, seed=5,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "record", "schema": SCHEMA}})
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)
    # Any JSON object: greedy, with room to finish.
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=200, temperature=0,
        response_format={"type": "json_object"})
    choice = answer.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # cut by max_tokens: still a prefix of an object
        assert choice.message.content.startswith("{")


@pytest.mark.parametrize("fields,check", [
    ({"guided_choice": ["alpha", "beta", "gamma"]}, lambda t: t in ("alpha", "beta", "gamma")),
    ({"guided_regex": r"[0-9]{3}-[a-z]{2,4}"}, lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t)),
    ({"guided_grammar": 'root ::= "(" ("yes" | "no") ")"'}, lambda t: t in ("(yes)", "(no)")),
    ({"structured_outputs": {"choice": ["up", "down"]}}, lambda t: t in ("up", "down")),
    ({"guided_json": {"type": "array", "items": {"type": "boolean"}, "minItems": 1,
                      "maxItems": 3}},
     lambda t: 1 <= len(json.loads(t)) <= 3 and all(isinstance(b, bool) for b in json.loads(t))),
])
def test_vllm_fields_constrain_every_seed(client, fields, check):
    for seed in range(10):
        text = constrained(client, seed, **json.loads(json.dumps(fields)))
        assert check(text), (fields, seed, text)


def test_choice_is_what_the_model_prefers_among_them(client):
    """Greedy under a choice picks among the allowed ids only: the same answer every time, and one
    of the choices (the unconstrained greedy answer is none of them)."""
    free = client.completions.create(model=MODEL, prompt="Record:", max_tokens=4, temperature=0)
    assert free.choices[0].text not in ("alpha", "beta")
    answers = {constrained(client, seed, temperature=0, guided_choice=["alpha", "beta"])
               for seed in range(3)}
    assert len(answers) == 1 and answers <= {"alpha", "beta"}


@pytest.mark.parametrize("fields,param,message", [
    ({"guided_regex": "(unclosed"}, "guided_regex", "does not compile to a grammar"),
    ({"guided_json": {"type": "no-such-type"}}, "guided_json", "does not compile to a grammar"),
    ({"guided_grammar": "root ::= "}, "guided_grammar", "does not compile to a grammar"),
    ({"guided_choice": ["a"], "guided_regex": "a"}, "guided_choice", "give one"),
    ({"response_format": {"type": "xml"}}, "response_format", "json_object or json_schema"),
    # What would narrow the grammar further could leave nothing to draw.
    ({"guided_choice": ["a"], "min_tokens": 1}, "min_tokens", "cannot be combined"),
    ({"guided_choice": ["a"], "allowed_token_ids": [5]}, "allowed_token_ids",
     "cannot be combined"),
    ({"guided_choice": ["a"], "bad_words": ["a"]}, "bad_words", "cannot be combined"),
])
def test_bad_grammars_are_refused_by_field(client, fields, param, message):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_body=fields)
    assert caught.value.param == param
    assert message in caught.value.message
