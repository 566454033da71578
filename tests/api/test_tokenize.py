"""vLLM's /tokenize and /detokenize, /v1/models/{id}, /version, a request's own chat_template and
--chat-template FILE."""

from __future__ import annotations

import re
import subprocess

import httpx
import openai
import pytest

from support import BINARY, FIXTURE_DIR, MAX_MODEL_LEN, MODEL, SOURCE_DIR, start_server, tokenize

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a tide."}]
# A template unlike the model's, so that its use shows in the tokens.
PLAIN_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}" \
                 "{% if add_generation_prompt %}<assistant>{% endif %}"
PLAIN_RENDERED = "<system>Be brief.\n<user>Name a tide.\n<assistant>"


def test_tokenize_a_prompt_as_the_cli_does(http):
    text = "The lighthouse keeper counted 12 ships, then 13."
    body = http.post("/tokenize", json={"model": MODEL, "prompt": text}).json()
    assert body["tokens"] == tokenize(text)
    assert body["count"] == len(body["tokens"])
    assert body["max_model_len"] == MAX_MODEL_LEN
    assert body["token_strs"] is None


def test_token_strs_are_the_vocabulary_entries(http):
    body = http.post("/tokenize", json={"prompt": "hello world", "return_token_strs": True}).json()
    assert len(body["token_strs"]) == len(body["tokens"])
    # Byte-level BPE's entries: the space before "world" is the vocabulary's "Ġ".
    assert "".join(body["token_strs"]) == "helloĠworld"


def test_tokenize_messages_gives_the_chat_prompt(http, client):
    body = http.post("/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()
    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                          extra_body={"return_token_ids": True})
    assert body["tokens"] == chat.choices[0].model_extra["prompt_token_ids"]
    without_prompt = http.post("/tokenize", json={"messages": MESSAGES,
                                                  "add_generation_prompt": False}).json()
    assert len(without_prompt["tokens"]) < len(body["tokens"])
    assert body["tokens"][:len(without_prompt["tokens"])] == without_prompt["tokens"]


def test_detokenize_inverts_tokenize(http):
    text = "Tides: spring and neap <|im_end|> (kept, as vLLM keeps special tokens)"
    ids = http.post("/tokenize", json={"prompt": text}).json()["tokens"]
    assert http.post("/detokenize", json={"model": MODEL, "tokens": ids}).json() == {"prompt": text}


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "prompt"),
    ("/tokenize", {}, "messages"),
    ("/tokenize", {"prompt": 7}, "prompt"),
    ("/tokenize", {"messages": MESSAGES, "chat_template": "{% for %}"}, "chat_template"),
    ("/detokenize", {"tokens": [1, 10**9]}, "tokens"),
    ("/detokenize", {"tokens": [-1]}, "tokens"),
    ("/detokenize", {"tokens": "12"}, "tokens"),
])
def test_bad_tokenize_requests_name_the_field(http, path, body, param):
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_tokenize_checks_the_model_name(http):
    for path, body in (("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [1]})):
        response = http.post(path, json={**body, "model": "not-this-one"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


def test_models_retrieve(client):
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("not-this-one")


def test_version_is_the_project_version(http):
    version = http.get("/version").json()["version"]
    cmake = (SOURCE_DIR / "CMakeLists.txt").read_text()
    assert re.search(rf"project\(tidal VERSION {re.escape(version)} ", cmake), version


def test_a_request_chat_template_replaces_the_models(http, client):
    body = http.post("/tokenize", json={"messages": MESSAGES,
                                        "chat_template": PLAIN_TEMPLATE}).json()
    assert body["tokens"] == tokenize(PLAIN_RENDERED)
    chat = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=1,
        extra_body={"return_token_ids": True, "chat_template": PLAIN_TEMPLATE})
    assert chat.choices[0].model_extra["prompt_token_ids"] == tokenize(PLAIN_RENDERED)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                       extra_body={"chat_template": "{{ raise_exception('no') }}"})
    assert "no" in str(raised.value)


def test_chat_template_flag_replaces_the_models(tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text(PLAIN_TEMPLATE)
    with start_server("--chat-template", str(template)) as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
            chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                                  extra_body={"return_token_ids": True})
        assert chat.choices[0].model_extra["prompt_token_ids"] == tokenize(PLAIN_RENDERED)
        # Without --trust-request-chat-template a request's own template is refused by name.
        refused = httpx.post(server.url + "/tokenize", timeout=30, json={
            "messages": MESSAGES, "chat_template": PLAIN_TEMPLATE})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "chat_template"
        assert "--trust-request-chat-template" in refused.json()["error"]["message"]


def test_a_missing_chat_template_file_stops_the_server(tmp_path):
    missing = tmp_path / "missing.jinja"
    result = subprocess.run([str(BINARY), "serve", "--port", "0", "--chat-template", str(missing)],
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert f"--chat-template {missing}: no such file" in result.stderr.decode()


def test_special_tokens_of_the_post_processor(tmp_path):
    """A tokenizer whose post-processor puts a BOS and an EOS around a text (as Llama-, Mistral-
    and DeepSeek-style files do): completions add them by default, chat does not (its template
    writes them), and add_special_tokens says otherwise; as vLLM."""
    model = tmp_path / "model"
    model.mkdir()
    for item in FIXTURE_DIR.iterdir():
        if item.name != "tokenizer.json":
            (model / item.name).symlink_to(item)
    template = SOURCE_DIR / "tests/fixtures/tokenizers/fixture_template/tokenizer.json"
    (model / "tokenizer.json").symlink_to(template)
    bos, eos = tokenize("<|im_start|>"), tokenize("<|endoftext|>")
    text = "The lighthouse keeper"
    with start_server("--model", str(model), "--served-model-name", MODEL) as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
            def prompt_ids(**kwargs):
                return client.completions.create(
                    model=MODEL, prompt=text, max_tokens=1,
                    extra_body={"return_token_ids": True, **kwargs}).choices[0].model_extra[
                        "prompt_token_ids"]
            assert prompt_ids() == bos + tokenize(text) + eos
            assert prompt_ids(add_special_tokens=False) == tokenize(text)
            chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                                  extra_body={"return_token_ids": True})
            rendered = httpx.post(server.url + "/tokenize", timeout=30,
                                  json={"messages": MESSAGES}).json()["tokens"]
            assert chat.choices[0].model_extra["prompt_token_ids"] == rendered
            # No BOS added before the template's own first token, no EOS after the prompt.
            assert rendered[:2 * len(bos)] != bos + bos and rendered[-len(eos):] != eos
        tokenized = httpx.post(server.url + "/tokenize", timeout=30, json={"prompt": text}).json()
        assert tokenized["tokens"] == bos + tokenize(text) + eos
        plain = httpx.post(server.url + "/tokenize", timeout=30,
                           json={"prompt": text, "add_special_tokens": False}).json()
        assert plain["tokens"] == tokenize(text)
